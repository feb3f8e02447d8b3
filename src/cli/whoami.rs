//! `basphere whoami`: who basphere thinks you are.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::user;
use crate::output::{Human, Output, Report};

/// Show who you are: user, role and keys
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Tenants, administrators, and the service account.
pub const ALLOWED: Allowed = Allowed::USERS.and(Allowed::SERVICE);

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, _out: &mut Output) -> Result<Report> {
        let me = user::me(ctx)?;
        let role = if ctx.actor.role.is_admin() {
            "admin"
        } else {
            "user"
        };
        let value = serde_json::json!({
            "actor": ctx.actor.name,
            "via": ctx.actor.via,
            "role": role,
            "user": me.as_ref().map(|(u, _)| &u.id),
            "email": me.as_ref().map(|(u, _)| &u.email),
            "keys": me.as_ref().map(|(_, k)| k.iter().map(|k| &k.fingerprint).collect::<Vec<_>>()),
        });
        let mut fields = vec![
            ("actor", ctx.actor.name.clone()),
            ("via", ctx.actor.via.to_owned()),
            ("role", role.to_owned()),
        ];
        match &me {
            Some((u, keys)) => {
                fields.push(("user", u.id.clone()));
                fields.push(("email", u.email.clone()));
                for k in keys {
                    fields.push(("key", format!("{} {}", k.fingerprint, k.algorithm)));
                }
            }
            None => fields.push(("user", "(none: use --as USER to act for a user)".into())),
        }
        Ok(Report::new(&value, Human::Fields(fields)))
    }
}
