//! `admin init`: makes an installation's data directory and database, the one place
//! where a database is ever created.

use std::path::PathBuf;

use crate::context::Context;
use crate::db;
use crate::error::Result;

/// An installation's database, new or found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Initialized {
    pub data_dir: PathBuf,
    pub database: PathBuf,
    /// The id every libvirt object of this installation carries.
    pub installation: String,
    /// False when the database was already there: then nothing but migrations changed.
    pub created: bool,
}

/// Creates the data directory tree and an empty database, or finds the existing ones.
pub fn database_only(ctx: &Context) -> Result<Initialized> {
    ctx.paths.create()?;
    let database = ctx.config.db_path();
    let (conn, created) = db::create(&database)?;
    let installation = db::installation::id(&conn)?;
    drop(conn);
    if created {
        ctx.audit("admin.init", &installation, &Ok(()));
    }
    Ok(Initialized {
        data_dir: ctx.paths.root.clone(),
        database,
        installation,
        created,
    })
}
