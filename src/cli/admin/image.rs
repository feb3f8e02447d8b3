//! `basphere admin image ...`: the base image catalogue.

use std::path::PathBuf;

use clap::Subcommand;

use crate::context::Context;
use crate::error::Result;
use crate::ops::image;
use crate::output::{timestamp, Output};
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
        name: String,
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
    Remove { name: String },
}

pub fn exec(args: &Args, ctx: &Context, out: &mut Output) -> Result<i32> {
    match &args.command {
        Command::Add {
            name,
            file,
            os_user,
        } => {
            let name: ImageName = name.parse()?;
            let spinner = out.spinner();
            spinner.set_message(format!("copying {}", file.display()));
            let added = image::add(ctx, &name, file, os_user.as_deref());
            spinner.finish_and_clear();
            let img = added?;
            if out.json {
                out.json(&img)?;
            } else {
                out.line(format!(
                    "added image {} ({}, login {})",
                    img.name,
                    Size::from_bytes(img.virtual_size),
                    img.os_user
                ))?;
            }
        }
        Command::List => {
            let images = image::list(ctx)?;
            if out.json {
                out.json(&images)?;
            } else {
                let rows = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.os_user.clone(),
                            Size::from_bytes(i.virtual_size).to_string(),
                            timestamp(i.created_at),
                            i.path.clone(),
                        ]
                    })
                    .collect();
                out.table(&["NAME", "LOGIN", "SIZE", "ADDED", "PATH"], rows)?;
            }
        }
        Command::Remove { name } => {
            image::remove(ctx, name)?;
            out.line(format!("removed image {name}"))?;
        }
    }
    Ok(0)
}
