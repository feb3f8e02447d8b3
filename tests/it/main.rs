//! The integration tests: one binary, a module per feature, and the fixtures they share.

mod fixtures;

mod admins;
mod cli;
mod console;
mod doctor;
mod e2e;
mod help;
mod init;
mod isolation;
mod jobs;
mod openssh;
mod package;
mod permissions;
mod private_files;
mod reconcile;
mod revocation;
mod signup;
mod snapshot_libvirt;
mod ssh_attacks;
mod ssh_server;
mod storage;
mod virt_driver;
mod vm_libvirt;
