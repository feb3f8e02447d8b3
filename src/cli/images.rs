//! `basphere images`: the base images VMs can be created from.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::db::images::Image;
use crate::error::Result;
use crate::ops::image;
use crate::output::{Human, Output, Report};
use crate::validate::Size;

/// List the images you can create VMs from
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        let images = image::list(ctx)?;
        let public: Vec<_> = images
            .iter()
            .map(|i| serde_json::json!({ "name": i.name, "os_user": i.os_user, "virtual_size": i.virtual_size }))
            .collect();
        let row = |i: &Image| {
            let size = Size::from_bytes(i.virtual_size).to_string();
            vec![i.name.clone(), i.os_user.clone(), size]
        };
        let rows = images.iter().map(row).collect();
        let headers = vec!["NAME", "LOGIN", "SIZE"];
        Ok(Report::new(&public, Human::Table { headers, rows }))
    }
}
