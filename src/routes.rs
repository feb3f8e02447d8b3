//! The host's IPv4 routes, read from the kernel: a network pool that overlaps one would
//! shadow addresses the host already reaches, so `admin init` asks and `doctor` warns.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use crate::config::NetworkPool;

/// An IPv4 route of the host.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub device: String,
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (dev {})", self.net, self.prefix, self.device)
    }
}

/// The routes of this host that overlap `pool`, but those of basphere's own bridges
/// (devices named with `own_prefix`), which carry routes into the pool by design.
pub fn overlapping(pool: &NetworkPool, own_prefix: &str) -> io::Result<Vec<Route>> {
    let text = std::fs::read_to_string(crate::hooks::route_table())?;
    Ok(parse(&text)
        .into_iter()
        .filter(|r| !r.device.starts_with(own_prefix))
        .filter(|r| overlaps((pool.base, pool.prefix), (r.net, r.prefix)))
        .collect())
}

/// The routes in `/proc/net/route` (addresses in the host's byte order, as hex), but
/// the default route, which overlaps everything and shadows nothing.
fn parse(text: &str) -> Vec<Route> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (device, dest, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let prefix = u32::from(hex(mask)?).leading_ones() as u8;
            (prefix > 0).then(|| Route {
                device: (*device).to_owned(),
                net: hex(dest).unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix,
            })
        })
        .collect()
}

/// Whether two networks share an address: they agree on the shorter prefix.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let bits = u32::from(a.1.min(b.1));
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_route_table() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            d0\t0005640A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse(text);
        let shown: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(shown, ["192.0.2.0/24 (dev eth0)", "10.100.5.0/24 (dev d0)"]);
    }

    #[test]
    fn networks_overlap_when_one_holds_the_other() {
        let net = |a, b, c, p| (Ipv4Addr::new(10, a, b, c), p);
        assert!(overlaps(net(100, 0, 0, 16), net(100, 5, 0, 24)));
        assert!(overlaps(net(100, 5, 0, 24), net(100, 0, 0, 16)));
        assert!(overlaps(net(0, 0, 0, 8), net(100, 0, 0, 16)));
        assert!(!overlaps(net(100, 0, 0, 16), net(101, 0, 0, 16)));
        assert!(!overlaps(
            net(100, 0, 0, 16),
            (Ipv4Addr::new(192, 0, 2, 0), 24)
        ));
    }
}
