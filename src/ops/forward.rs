//! Port forwarding through the bastion (`ssh -J`): a tenant reaches port 22 of their own
//! VMs, named by address or by VM name, and nothing else.

use std::net::{Ipv4Addr, SocketAddrV4};

use rusqlite::Connection;

use crate::context::Binding;
use crate::db;
use crate::error::{Error, Result};
use crate::validate::VmName;

/// The only port a tenant may forward to.
pub const SSH_PORT: u32 = 22;

/// Where a forward asked for by the tenant `who` names to `host:port` may go, or why it
/// may not. The connection's key must still be that tenant's.
///
/// Another user's VM is refused with the same words as a VM that does not exist.
pub fn target(conn: &Connection, who: &Binding, host: &str, port: u32) -> Result<SocketAddrV4> {
    who.check(conn)?;
    let owner = who.user.as_str();
    if port != SSH_PORT {
        return Err(Error::denied(format!(
            "forwarding to port {port} is not allowed: only port {SSH_PORT} of your VMs"
        )));
    }
    let vm = match host.parse::<Ipv4Addr>() {
        Ok(ip) => db::vms::list(conn, Some(owner))?
            .into_iter()
            .find(|vm| vm.ip == ip.to_string()),
        Err(_) => {
            let name: VmName = host.to_ascii_lowercase().parse().map_err(|_| {
                Error::denied(format!(
                    "`{}` is neither a VM name nor an IPv4 address",
                    crate::validate::quoted(host)
                ))
            })?;
            db::vms::get(conn, owner, name.as_str())?
        }
    };
    let vm = vm.ok_or_else(|| Error::not_found("VM", crate::validate::quoted(host)))?;
    if vm.state != db::vms::State::Ready {
        return Err(Error::conflict(
            format!("VM `{}` is {}", vm.name, vm.state.as_str()),
            None,
        ));
    }
    let ip: Ipv4Addr = vm
        .ip
        .parse()
        .map_err(|_| Error::conflict(format!("VM `{}` has no valid address", vm.name), None))?;
    Ok(SocketAddrV4::new(ip, SSH_PORT as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_vms() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&conn).unwrap();
        conn.execute(
            "INSERT INTO images VALUES ('debian', '/x', 'qcow2', 1, 'debian', 0)",
            [],
        )
        .unwrap();
        let vms = [
            ("alice", 0, "web1", "10.100.0.10", "ready"),
            ("alice", 0, "new", "10.100.0.11", "creating"),
            ("bob", 1, "db", "10.100.1.10", "ready"),
        ];
        for (user, net, vm, ip, state) in vms {
            conn.execute(
                "INSERT OR IGNORE INTO users (id, email, role, state, created_at)
                 VALUES (?1, ?1 || '@example.com', 'user', 'active', 0)",
                [user],
            )
            .unwrap();
            conn.execute(
                "INSERT OR IGNORE INTO ssh_keys VALUES ('SHA256:' || ?1, ?1, 'ssh-ed25519', 'ssh-ed25519 AAAA', '', 0)",
                [user],
            )
            .unwrap();
            conn.execute(
                "INSERT OR IGNORE INTO networks VALUES (?2, ?1, ?1, ?1, ?1)",
                rusqlite::params![user, net],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO vms (id, owner, name, image, cpus, memory_mib, disk_bytes, state, network_idx, mac, ip, domain, created_at)
                 VALUES (?3 || '-id', ?1, ?3, 'debian', 1, 512, 1, ?5, ?2, ?4, ?4, ?3, 0)",
                rusqlite::params![user, net, vm, ip, state],
            )
            .unwrap();
        }
        conn
    }

    fn alice() -> Binding {
        Binding {
            user: "alice".into(),
            fingerprint: "SHA256:alice".into(),
            serial: None,
        }
    }

    #[test]
    fn a_revoked_key_or_disabled_user_forwards_nowhere() {
        let conn = db_with_vms();
        assert!(target(&conn, &alice(), "web1", 22).is_ok());
        conn.execute("UPDATE users SET state = 'disabled' WHERE id = 'alice'", [])
            .unwrap();
        let refused = target(&conn, &alice(), "web1", 22);
        assert!(
            matches!(refused, Err(Error::PermissionDenied { .. })),
            "{refused:?}"
        );
        conn.execute("UPDATE users SET state = 'active' WHERE id = 'alice'", [])
            .unwrap();
        conn.execute("DELETE FROM ssh_keys WHERE user_id = 'alice'", [])
            .unwrap();
        let refused = target(&conn, &alice(), "web1", 22);
        assert!(
            matches!(refused, Err(Error::PermissionDenied { .. })),
            "{refused:?}"
        );
        // Bob's key is no key of alice's.
        let bob_key = Binding {
            fingerprint: "SHA256:bob".into(),
            ..alice()
        };
        assert!(target(&conn, &bob_key, "web1", 22).is_err());
    }

    #[test]
    fn only_port_22_of_ones_own_vms() {
        let conn = db_with_vms();
        let to = |host: &str, port| target(&conn, &alice(), host, port);
        assert_eq!(to("web1", 22).unwrap().to_string(), "10.100.0.10:22");
        assert_eq!(to("WEB1", 22).unwrap().to_string(), "10.100.0.10:22");
        assert_eq!(to("10.100.0.10", 22).unwrap().to_string(), "10.100.0.10:22");
        assert!(matches!(
            to("web1", 80),
            Err(Error::PermissionDenied { .. })
        ));
        // Bob's VM, by name and by address, reads like a VM that does not exist.
        for host in ["db", "10.100.1.10", "10.100.0.12", "db-id"] {
            assert!(
                matches!(to(host, 22), Err(Error::NotFound { .. })),
                "{host}"
            );
        }
        assert!(matches!(to("new", 22), Err(Error::Conflict { .. })));
        for host in ["", "web1;id", "../x", "127.0.0.1:22", "web1\n"] {
            assert!(to(host, 22).is_err(), "{host}");
        }
    }
}
