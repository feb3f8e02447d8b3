//! Business rules. Operations take validated values and a `Context`, check roles and
//! ownership themselves, write the audit log, and return values; they never print.

pub mod adopt;
pub mod audit;
pub mod doctor;
pub mod forward;
pub mod image;
pub mod init;
pub mod jobs;
pub mod key;
pub mod lock;
pub mod quota;
pub mod reconcile;
pub mod signup;
pub mod snapshot;
pub mod user;
pub mod vm;
