//! Loopback addresses for pods and Services.
//!
//! Linux routes all of `127.0.0.0/8` to the loopback interface, so every
//! pod gets its own `127.x.y.z` (pods can all listen on the same port) and
//! every Service gets one where the kubelet proxies its ports. Pod
//! addresses come from `127.<block>.0.0/16` with a block drawn per kubelet;
//! Service addresses from `127.128.0.0/9`, hashed from the kubelet's salt
//! and the Service's namespace and name, so a pod can be handed a
//! Service's address before the Service exists, and two kubelets (two
//! tests running at once) do not collide.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// The loopback address of Service `namespace/name` under `salt`.
pub fn service_ip(salt: u64, namespace: &str, name: &str) -> Ipv4Addr {
    let mut h = Sha256::new();
    h.update(salt.to_le_bytes());
    h.update(namespace.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let d = h.finalize();
    // 127.128.0.0/9, avoiding .0 and .255 in the last octet
    let last = 1 + d[2] % 254;
    Ipv4Addr::new(127, 128 | (d[0] & 0x7f), d[1], last)
}

/// A random-enough `u64` from the standard library's per-process hasher
/// keys (no extra dependency for a salt and name suffixes).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Pod addresses of one kubelet: `127.<block>.<hi>.<lo>`, handed out
/// from a random starting point so that two kubelets on one machine (tests
/// running at once) practically never hand out the same address.
#[derive(Debug)]
pub struct PodIpPool {
    block: u8,
    start: u16,
    in_use: BTreeSet<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error("all 65,000 pod addresses of 127.{0}.0.0/16 are in use")]
pub struct PoolExhausted(u8);

impl PodIpPool {
    /// A pool in block `2..=127` (127.0/16 and 127.1/16 are left to
    /// whatever else the machine runs).
    pub fn new(seed: u64) -> Self {
        Self {
            block: 2 + (seed % 126) as u8,
            start: (seed >> 8) as u16,
            in_use: BTreeSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, PoolExhausted> {
        let n = (0..=u16::MAX)
            .map(|i| self.start.wrapping_add(i))
            .find(|n| n & 0xff != 0 && n & 0xff != 0xff && !self.in_use.contains(n))
            .ok_or(PoolExhausted(self.block))?;
        self.in_use.insert(n);
        let [hi, lo] = n.to_be_bytes();
        Ok(Ipv4Addr::new(127, self.block, hi, lo))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        let [a, b, hi, lo] = ip.octets();
        if a == 127 && b == self.block {
            self.in_use.remove(&u16::from_be_bytes([hi, lo]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_stable_per_salt_and_distinct() {
        let a = service_ip(1, "lab", "mnist-aggregator");
        assert_eq!(a, service_ip(1, "lab", "mnist-aggregator"));
        assert!(a.is_loopback() && a.octets()[1] >= 128);
        assert_ne!(a, service_ip(2, "lab", "mnist-aggregator"));
        assert_ne!(a, service_ip(1, "lab2", "mnist-aggregator"));
        // namespace and name are separated: "a"/"bc" is not "ab"/"c"
        assert_ne!(service_ip(1, "a", "bc"), service_ip(1, "ab", "c"));
    }

    #[test]
    fn pod_addresses_are_unique_until_released() {
        let mut pool = PodIpPool::new(5);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_ne!(a, b);
        assert!(a.is_loopback() && a.octets()[1] == 7 && a.octets()[1] < 128);
        pool.release(a);
        assert_eq!(pool.allocate().unwrap(), a);
        assert!(pool.allocate().unwrap().octets()[3] != 0);
        // same block, another starting point: another address
        let seed = 5 + 126 * 256 * 7;
        let mut other = PodIpPool::new(seed);
        let first = other.allocate().unwrap();
        assert_eq!(first.octets()[1], 7);
        assert_ne!(first, a);
        for _ in 0..600 {
            let ip = other.allocate().unwrap();
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255, "{ip}");
        }
    }
}
