//! `basphere create-vm NAME`: a new VM within the quota.

use crate::cli::Run;
use crate::context::{Allowed, Context};
use crate::error::Result;
use crate::ops::vm::{self, CreateRequest};
use crate::output::{Output, Report};
use crate::validate::{self, ImageName, Size, VmName};

/// Create a virtual machine
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  basphere create-vm web1\n  basphere create-vm db1 --flavor large\n  basphere create-vm build --cpus 4 --memory 8G --disk 40G --image debian-12"
)]
pub struct Args {
    /// VM name: a lowercase letter, then lowercase letters, digits or `-` (at most 63)
    pub name: VmName,

    /// Base image (see `basphere images`)
    #[arg(long)]
    pub image: Option<ImageName>,

    /// Size preset (see `basphere config`); --cpus, --memory and --disk refine the default
    #[arg(long, conflicts_with_all = ["cpus", "memory", "disk"])]
    pub flavor: Option<String>,

    /// Virtual CPUs
    #[arg(long, allow_hyphen_values = true)]
    pub cpus: Option<String>,

    /// Memory, e.g. 2G or 512M
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,

    /// Disk size, e.g. 20G
    #[arg(long, allow_hyphen_values = true)]
    pub disk: Option<String>,

    /// Define the VM but do not start it
    #[arg(long)]
    pub no_start: bool,
}

/// Tenants, and administrators acting for one.
pub const ALLOWED: Allowed = Allowed::USERS;

impl Run for Args {
    fn allowed(&self) -> Allowed {
        ALLOWED
    }

    fn exec(&self, ctx: &Context, out: &mut Output) -> Result<Report> {
        let req = CreateRequest {
            name: Some(self.name.clone()),
            image: self.image.clone(),
            flavor: self.flavor.clone(),
            cpus: self
                .cpus
                .as_deref()
                .map(|c| validate::count("CPU count", c, 64))
                .transpose()?,
            memory: self.memory.as_deref().map(str::parse::<Size>).transpose()?,
            disk: self.disk.as_deref().map(str::parse::<Size>).transpose()?,
            start: !self.no_start,
        };
        let created = out.working("creating", |step| vm::create(ctx, &req, &mut |s| step(s)));
        Ok(Report::of(&created?))
    }
}
