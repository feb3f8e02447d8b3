//! `basphere config`: the settings in force and where each came from.

use crate::config::Config;
use crate::context::Caller;
use crate::error::{Error, Result};
use crate::output::Output;

/// Show the configuration in force and where each value came from
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Precedence: command-line flag, then BASPHERE_<KEY> environment variable, then the config file, then the default."
)]
pub struct Args {}

pub fn exec(_args: &Args, caller: &Caller, config: &Config, out: &mut Output) -> Result<i32> {
    if caller.is_remote() {
        return Err(Error::denied(
            "`config` is for administrators on the bastion",
        ));
    }
    let entries = config.entries();
    if out.json {
        let value: Vec<_> = entries
            .iter()
            .map(|(k, v, s)| serde_json::json!({ "key": k, "value": v, "source": s }))
            .collect();
        return out.json(&value).map(|_| 0);
    }
    let rows = entries
        .into_iter()
        .map(|(k, v, s)| vec![k, v, s.to_string()])
        .collect();
    out.table(&["KEY", "VALUE", "SOURCE"], rows)?;
    Ok(0)
}
