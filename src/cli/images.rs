//! `basphere images`: the base images VMs can be created from.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::image;
use crate::output::Output;
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

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<i32> {
        let images = image::list(ctx)?;
        if out.json {
            let public: Vec<_> = images
                .iter()
                .map(|i| serde_json::json!({ "name": i.name, "os_user": i.os_user, "virtual_size": i.virtual_size }))
                .collect();
            return out.json(&public).map(|_| 0);
        }
        let rows = images
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.os_user.clone(),
                    Size::from_bytes(i.virtual_size).to_string(),
                ]
            })
            .collect();
        out.table(&["NAME", "LOGIN", "SIZE"], rows)?;
        Ok(0)
    }
}
