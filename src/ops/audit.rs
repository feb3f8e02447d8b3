//! Reading the audit log.

use crate::context::Context;
use crate::db;
use crate::db::audit::Entry;
use crate::error::Result;

pub fn recent(ctx: &Context, user: Option<&str>, limit: u32) -> Result<Vec<Entry>> {
    db::audit::recent(ctx.db()?, user, limit)
}
