//! `basphere admin image ...`: the base image catalogue.

use std::path::PathBuf;

use clap::Subcommand;

use crate::context::Context;
use crate::db::images::Image;
use crate::error::Result;
use crate::ops::image;
use crate::output::{timestamp, Human, Output, Report};
use crate::validate::{ImageName, Size};

/// Register and remove base images
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy a qcow2 or raw cloud image into the catalogue
    #[command(
        after_help = "Example:\n  basphere admin image add debian-12 debian-12-genericcloud-amd64.qcow2 --os-user debian"
    )]
    Add {
        /// Image name, e.g. debian-12
        name: ImageName,
        /// The image file (qcow2 or raw, with cloud-init)
        file: PathBuf,
        /// The login user cloud-init creates in this image [default: guessed from the name]
        #[arg(long, value_name = "NAME")]
        os_user: Option<String>,
    },
    /// List images
    #[command(visible_alias = "ls")]
    List,
    /// Remove an image no VM uses
    #[command(visible_alias = "rm")]
    Remove { name: ImageName },
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<Report> {
    match &args.command {
        Command::Add {
            name,
            file,
            os_user,
        } => {
            let copying = format!("copying {}", file.display());
            let added = out.working(&copying, |_| {
                image::add(ctx, name, file, os_user.as_deref())
            });
            let img = added?;
            let size = Size::from_bytes(img.virtual_size);
            let line = format!("added image {} ({size}, login {})", img.name, img.os_user);
            Ok(Report::done(&img, line))
        }
        Command::List => {
            let images = image::list(ctx)?;
            let row = |i: &Image| {
                vec![
                    i.name.clone(),
                    i.os_user.clone(),
                    Size::from_bytes(i.virtual_size).to_string(),
                    timestamp(i.created_at),
                    i.path.clone(),
                ]
            };
            let rows = images.iter().map(row).collect();
            let headers = vec!["NAME", "LOGIN", "SIZE", "ADDED", "PATH"];
            Ok(Report::new(&images, Human::Table { headers, rows }))
        }
        Command::Remove { name } => {
            image::remove(ctx, name.as_str())?;
            let done = serde_json::json!({ "removed": name });
            Ok(Report::done(&done, format!("removed image {name}")))
        }
    }
}
