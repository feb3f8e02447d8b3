//! Internal qcow2 snapshots through libvirt. External snapshots cannot be reverted on
//! libvirt 9.0; internal ones can, with memory state on a running VM (SeaBIOS only).
//!
//! The data of an internal snapshot lives in the disk, its description in libvirt,
//! which forgets it with the domain. So before a domain is undefined its snapshots' XML
//! is written beside the disk, and defined again from there with the domain.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use uuid::Uuid;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;
use virt::sys;

use super::{is_code, libvirt, xml, Hypervisor, Result, VirtError};

/// A snapshot as libvirt has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix seconds, from the snapshot's `<creationTime>`.
    pub created_at: i64,
    /// Whether it stores the guest's memory (it was taken of a running domain).
    pub with_memory: bool,
}

/// The text of the first `<tag>` element of `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let rest = xml.split(&format!("<{tag}>")).nth(1)?;
    rest.split(&format!("</{tag}>")).next().map(str::trim)
}

/// Whether a snapshot's XML says it stores memory: an internal snapshot of a domain
/// that was not off does, unless its `<memory>` says otherwise.
fn stores_memory(xml: &str) -> bool {
    let off = matches!(
        element(xml, "state"),
        None | Some("shutoff" | "crashed" | "disk-snapshot")
    );
    let no_memory =
        xml.contains("<memory snapshot='no'") || xml.contains("<memory snapshot=\"no\"");
    !off && !no_memory
}

fn creation_time(xml: &str) -> i64 {
    element(xml, "creationTime")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The snapshots in a file [`save_snapshots`] wrote: each one's name and XML, oldest
/// first. A missing file holds none.
fn read_saved(path: &Path) -> Result<Vec<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(VirtError::io(format!("cannot read `{}`", path.display()))(
                e,
            ))
        }
    };
    let corrupt = |why: String| VirtError::Io {
        context: format!("`{}` holds no saved snapshots", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    };
    let doc = roxmltree::Document::parse(&text).map_err(|e| corrupt(e.to_string()))?;
    let mut saved = Vec::new();
    for snap in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("domainsnapshot"))
    {
        let name = snap
            .children()
            .find(|n| n.has_tag_name("name"))
            .and_then(|n| n.text())
            .ok_or_else(|| corrupt("a snapshot without a name".into()))?;
        saved.push((name.to_owned(), text[snap.range()].to_owned()));
    }
    Ok(saved)
}

/// The names of the snapshots saved in `path`, oldest first; none when it is missing.
pub fn saved_snapshots(path: &Path) -> Result<Vec<String>> {
    Ok(read_saved(path)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Writes the XML of every snapshot of `dom` to `path`, oldest first, together with
/// any saved there before that the domain no longer has. Durable once it returns: the
/// file is written beside and renamed into place. A domain without snapshots writes
/// nothing.
pub(super) fn save_snapshots(dom: &Domain, dom_name: &str, path: &Path) -> Result<usize> {
    let all = dom
        .list_all_snapshots(0)
        .map_err(libvirt(format!("listing snapshots of `{dom_name}`")))?;
    if all.is_empty() {
        return Ok(0);
    }
    let mut snaps = Vec::new();
    for snap in all {
        let name = snap.name().map_err(libvirt("reading snapshot name"))?;
        let doc = snap.xml_desc(0).map_err(libvirt(format!(
            "reading snapshot `{name}` of `{dom_name}`"
        )))?;
        snaps.push((creation_time(&doc), name, doc));
    }
    for (name, doc) in read_saved(path)? {
        if !snaps.iter().any(|(_, n, _)| *n == name) {
            snaps.push((creation_time(&doc), name, doc));
        }
    }
    // Parents before children: a snapshot is defined again after the one it grew from.
    snaps.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut text = format!("<snapshots domain='{}'>\n", xml::escape(dom_name));
    for (_, _, doc) in &snaps {
        text.push_str(doc.trim());
        text.push('\n');
    }
    text.push_str("</snapshots>\n");
    let io = |what: &str| VirtError::io(format!("cannot {what} `{}`", path.display()));
    let tmp = path.with_extension("xml.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("write"))?;
    file.write_all(text.as_bytes()).map_err(io("write"))?;
    file.sync_all().map_err(io("write"))?;
    fs::rename(&tmp, path).map_err(io("write"))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("write"))?;
    }
    tracing::info!(domain = dom_name, snapshots = snaps.len(), path = %path.display(), "saved snapshot metadata");
    Ok(snaps.len())
}

impl Hypervisor {
    /// Defines again, from the file [`Hypervisor::undefine`] wrote, the snapshots the
    /// domain lacks, oldest first; then removes the file. Returns how many it defined.
    /// A missing file is fine. Safe to repeat: a crash leaves the file, and the
    /// snapshots already back are skipped.
    pub fn restore_snapshots(&self, uuid: Uuid, path: &Path) -> Result<usize> {
        let saved = read_saved(path)?;
        if saved.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(VirtError::io(format!("cannot remove `{}`", path.display()))(e))
                }
                _ => Ok(0),
            };
        }
        let (dom, dom_name) = self.snapshot_domain(uuid)?;
        let mut defined = 0;
        for (name, doc) in &saved {
            if self.find_snapshot(&dom, &dom_name, name)?.is_some() {
                continue;
            }
            dom.create_snapshot_xml(doc, sys::VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
                .map_err(libvirt(format!(
                    "defining snapshot `{name}` of `{dom_name}` again"
                )))?;
            defined += 1;
        }
        fs::remove_file(path)
            .map_err(VirtError::io(format!("cannot remove `{}`", path.display())))?;
        tracing::info!(
            domain = dom_name,
            snapshots = defined,
            "restored snapshot metadata"
        );
        Ok(defined)
    }

    fn snapshot_domain(&self, uuid: Uuid) -> Result<(Domain, String)> {
        self.domain(uuid)
    }

    fn find_snapshot(
        &self,
        dom: &Domain,
        dom_name: &str,
        name: &str,
    ) -> Result<Option<DomainSnapshot>> {
        let all = dom
            .list_all_snapshots(0)
            .map_err(libvirt(format!("listing snapshots of `{dom_name}`")))?;
        for snap in all {
            if snap.name().map_err(libvirt("reading snapshot name"))? == name {
                return Ok(Some(snap));
            }
        }
        Ok(None)
    }

    /// Takes an internal snapshot: with memory state when the domain runs, of the
    /// disk alone when it is shut off.
    pub fn create_snapshot(&self, uuid: Uuid, name: &str, description: &str) -> Result<()> {
        let (dom, dom_name) = self.snapshot_domain(uuid)?;
        let doc = format!(
            "<domainsnapshot><name>{}</name><description>{}</description></domainsnapshot>",
            xml::escape(name),
            xml::escape(description)
        );
        dom.create_snapshot_xml(&doc, 0).map_err(libvirt(format!(
            "creating snapshot `{name}` of `{dom_name}`"
        )))?;
        tracing::info!(domain = dom_name, snapshot = name, "created snapshot");
        Ok(())
    }

    /// The domain's snapshots; an unknown domain has none.
    pub fn snapshots(&self, uuid: Uuid) -> Result<Vec<SnapshotInfo>> {
        let Some(dom) = self.lookup_domain(uuid)? else {
            return Ok(Vec::new());
        };
        let dom_name = dom.name().unwrap_or_else(|_| uuid.to_string());
        let all = dom
            .list_all_snapshots(0)
            .map_err(libvirt(format!("listing snapshots of `{dom_name}`")))?;
        let mut out = Vec::new();
        for snap in all {
            let name = snap.name().map_err(libvirt("reading snapshot name"))?;
            let xml = snap.xml_desc(0).unwrap_or_default();
            out.push(SnapshotInfo {
                name,
                created_at: creation_time(&xml),
                with_memory: stores_memory(&xml),
            });
        }
        out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(out)
    }

    /// Whether the snapshot `name` stores the guest's memory.
    pub fn snapshot_holds_memory(&self, uuid: Uuid, name: &str) -> Result<bool> {
        let (dom, dom_name) = self.snapshot_domain(uuid)?;
        let snap =
            self.find_snapshot(&dom, &dom_name, name)?
                .ok_or_else(|| VirtError::Libvirt {
                    action: format!("reading snapshot `{name}` of `{dom_name}`"),
                    message: "no such snapshot".into(),
                })?;
        let xml = snap.xml_desc(0).map_err(libvirt(format!(
            "reading snapshot `{name}` of `{dom_name}`"
        )))?;
        Ok(stores_memory(&xml))
    }

    /// Returns the domain to the snapshot's state: running if it was taken running.
    pub fn revert_snapshot(&self, uuid: Uuid, name: &str) -> Result<()> {
        let (dom, dom_name) = self.snapshot_domain(uuid)?;
        let snap =
            self.find_snapshot(&dom, &dom_name, name)?
                .ok_or_else(|| VirtError::Libvirt {
                    action: format!("reverting `{dom_name}` to snapshot `{name}`"),
                    message: "no such snapshot".into(),
                })?;
        snap.revert(0).map_err(libvirt(format!(
            "reverting `{dom_name}` to snapshot `{name}`"
        )))?;
        tracing::info!(domain = dom_name, snapshot = name, "reverted to snapshot");
        Ok(())
    }

    /// Deletes a snapshot; one that is already gone is fine.
    pub fn delete_snapshot(&self, uuid: Uuid, name: &str) -> Result<()> {
        let Some(dom) = self.lookup_domain(uuid)? else {
            return Ok(());
        };
        let dom_name = dom.name().unwrap_or_else(|_| uuid.to_string());
        let Some(snap) = self.find_snapshot(&dom, &dom_name, name)? else {
            return Ok(());
        };
        match snap.delete(0) {
            Ok(()) => {
                tracing::info!(domain = dom_name, snapshot = name, "deleted snapshot");
                Ok(())
            }
            Err(e) if is_code(&e, ErrorNumber::NoDomainSnapshot) => Ok(()),
            Err(e) => Err(libvirt(format!(
                "deleting snapshot `{name}` of `{dom_name}`"
            ))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_creation_time() {
        let xml = "<domainsnapshot><name>a</name><creationTime>1795264095</creationTime></domainsnapshot>";
        assert_eq!(super::creation_time(xml), 1795264095);
        assert_eq!(super::creation_time("<domainsnapshot/>"), 0);
    }

    #[test]
    fn reads_whether_memory_is_stored() {
        let snap = |state: &str, extra: &str| {
            format!("<domainsnapshot><name>a</name><state>{state}</state>{extra}</domainsnapshot>")
        };
        assert!(super::stores_memory(&snap(
            "running",
            "<memory snapshot='internal'/>"
        )));
        assert!(super::stores_memory(&snap("paused", "")));
        assert!(!super::stores_memory(&snap("shutoff", "")));
        assert!(!super::stores_memory(&snap("disk-snapshot", "")));
        assert!(!super::stores_memory(&snap(
            "running",
            "<memory snapshot='no'/>"
        )));
        assert!(!super::stores_memory("<domainsnapshot/>"));
    }
}
