//! Internal qcow2 snapshots through libvirt. External snapshots cannot be reverted on
//! libvirt 9.0; internal ones can, with memory state on a running VM (SeaBIOS only).

use uuid::Uuid;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;

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

impl Hypervisor {
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
