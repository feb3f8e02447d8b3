//! Virtual machine rows: the record of what each user owns and holds against the quota.

use std::net::Ipv4Addr;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Reserved against the quota; the build is under way (or was cut short).
    Creating,
    Ready,
    /// Being torn down (or the teardown was cut short).
    Deleting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Ready => "ready",
            State::Deleting => "deleting",
        }
    }

    pub(crate) fn parse(s: &str) -> State {
        match s {
            "creating" => State::Creating,
            "deleting" => State::Deleting,
            _ => State::Ready,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Vm {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub host: String,
    pub image: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub state: State,
    pub network_idx: u32,
    pub mac: String,
    pub ip: String,
    pub domain: String,
    pub created_at: i64,
}

pub struct NewVm<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub name: &'a str,
    pub image: &'a str,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub network_idx: u32,
    pub mac: &'a str,
    pub ip: Ipv4Addr,
    pub domain: &'a str,
}

/// What a user holds: every VM counts, whatever its state; disk includes the guest RAM
/// that snapshots of running VMs store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub vms: u64,
}

const COLUMNS: &str =
    "id, owner, name, host, image, cpus, memory_mib, disk_bytes, state, network_idx, mac, ip, domain, created_at";

fn from_row(row: &Row) -> rusqlite::Result<Vm> {
    Ok(Vm {
        id: row.get(0)?,
        owner: row.get(1)?,
        name: row.get(2)?,
        host: row.get(3)?,
        image: row.get(4)?,
        cpus: row.get::<_, i64>(5)? as u32,
        memory_mib: row.get::<_, i64>(6)? as u64,
        disk_bytes: row.get::<_, i64>(7)? as u64,
        state: State::parse(&row.get::<_, String>(8)?),
        network_idx: row.get::<_, i64>(9)? as u32,
        mac: row.get(10)?,
        ip: row.get(11)?,
        domain: row.get(12)?,
        created_at: row.get(13)?,
    })
}

pub fn insert(conn: &Connection, vm: &NewVm, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO vms (id, owner, name, image, cpus, memory_mib, disk_bytes, state, network_idx, mac, ip, domain, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'creating', ?8, ?9, ?10, ?11, ?12)",
        params![
            vm.id,
            vm.owner,
            vm.name,
            vm.image,
            vm.cpus as i64,
            vm.memory_mib as i64,
            vm.disk_bytes as i64,
            vm.network_idx as i64,
            vm.mac,
            vm.ip.to_string(),
            vm.domain,
            now
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, owner: &str, name: &str) -> Result<Option<Vm>> {
    let sql = format!("SELECT {COLUMNS} FROM vms WHERE owner = ?1 AND name = ?2");
    Ok(conn.query_row(&sql, [owner, name], from_row).optional()?)
}

pub fn get_by_id(conn: &Connection, id: &str) -> Result<Option<Vm>> {
    let sql = format!("SELECT {COLUMNS} FROM vms WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], from_row).optional()?)
}

/// VMs of one owner, or of everyone, ordered by owner then name.
pub fn list(conn: &Connection, owner: Option<&str>) -> Result<Vec<Vm>> {
    let mut stmt;
    let rows = match owner {
        Some(owner) => {
            stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM vms WHERE owner = ?1 ORDER BY name"
            ))?;
            stmt.query_map([owner], from_row)?
        }
        None => {
            stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM vms ORDER BY owner, name"))?;
            stmt.query_map([], from_row)?
        }
    };
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn usage(conn: &Connection, owner: &str) -> Result<Usage> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(cpus), 0), COALESCE(SUM(memory_mib), 0),
                COALESCE(SUM(disk_bytes), 0)
                    + (SELECT COALESCE(SUM(memory_bytes), 0) FROM snapshots WHERE owner = ?1),
                COUNT(*)
         FROM vms WHERE owner = ?1",
        [owner],
        |r| {
            Ok(Usage {
                cpus: r.get::<_, i64>(0)? as u64,
                memory_mib: r.get::<_, i64>(1)? as u64,
                disk_bytes: r.get::<_, i64>(2)? as u64,
                vms: r.get::<_, i64>(3)? as u64,
            })
        },
    )?)
}

pub fn ips_in_network(conn: &Connection, network_idx: u32) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT ip FROM vms WHERE network_idx = ?1")?;
    let rows = stmt.query_map([network_idx as i64], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_state(conn: &Connection, id: &str, state: State) -> Result<()> {
    conn.execute(
        "UPDATE vms SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

pub fn delete(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM vms WHERE id = ?1", [id])? == 1)
}

pub fn count_for_owner(conn: &Connection, owner: &str) -> Result<u64> {
    Ok(
        conn.query_row("SELECT COUNT(*) FROM vms WHERE owner = ?1", [owner], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}
