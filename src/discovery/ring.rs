//! Which peers a node probes: node names on a hash ring, each node probing the next `k`.
//!
//! Every node computes the same ring from the same list, so when views agree each node is probed
//! by exactly `k` others (its `k` predecessors) and alerts can divide by `k`. Adding or removing
//! one node moves only the pairs that involve it and its `k` neighbours on either side.

/// FNV-1a, 64 bit, then the splitmix64 finaliser: stable across Rust versions and platforms,
/// unlike `DefaultHasher`, because every node (and every version during a rolling update) must
/// place names identically. FNV alone barely mixes a name's last bytes, so `ip-10-0-1-23` and
/// `ip-10-0-1-24` would sit side by side and a node's checkers would share its subnet or zone;
/// the finaliser scatters them.
fn position(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Node names placed on the ring.
#[derive(Debug, Clone)]
pub struct Ring<'a> {
    entries: Vec<(u64, &'a str)>,
}

impl<'a> Ring<'a> {
    pub fn new(nodes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut entries: Vec<(u64, &str)> = nodes.into_iter().map(|n| (position(n), n)).collect();
        entries.sort_unstable();
        entries.dedup();
        Self { entries }
    }

    /// The nodes `me` probes: the next `k` after its place on the ring (itself excluded, and
    /// whether or not it is on the ring), or every other node when `k` is 0 or covers them all.
    /// Names are returned sorted.
    pub fn neighbours(&self, me: &str, k: usize) -> Vec<&'a str> {
        let others = self.entries.iter().filter(|(_, n)| *n != me).count();
        let mut chosen: Vec<&str> = if k == 0 || k >= others {
            self.entries
                .iter()
                .map(|(_, n)| *n)
                .filter(|n| *n != me)
                .collect()
        } else {
            let mine = (position(me), me);
            let start = self.entries.partition_point(|entry| *entry <= mine);
            (0..self.entries.len())
                .map(|i| self.entries[(start + i) % self.entries.len()].1)
                .filter(|n| *n != me)
                .take(k)
                .collect()
        };
        chosen.sort_unstable();
        chosen
    }
}

/// The nodes `me` probes among `nodes` (which may or may not contain `me`); see
/// [`Ring::neighbours`].
pub fn neighbours<'a>(
    me: &str,
    nodes: impl IntoIterator<Item = &'a str>,
    k: usize,
) -> Vec<&'a str> {
    Ring::new(nodes).neighbours(me, k)
}

/// How many nodes probe each node when all `nodes` agree on the ring.
pub fn expected_checkers(nodes: usize, k: usize) -> usize {
    let others = nodes.saturating_sub(1);
    if k == 0 { others } else { k.min(others) }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:05}")).collect()
    }

    fn assignments(nodes: &[String], k: usize) -> BTreeSet<(String, String)> {
        let ring = Ring::new(nodes.iter().map(String::as_str));
        nodes
            .iter()
            .flat_map(|me| {
                ring.neighbours(me, k)
                    .into_iter()
                    .map(move |peer| (me.clone(), peer.to_owned()))
            })
            .collect()
    }

    #[test]
    fn five_thousand_nodes_each_have_exactly_k_checkers() {
        let nodes = names(5000);
        let k = 10;
        let ring = Ring::new(nodes.iter().map(String::as_str));
        let mut checkers: HashMap<String, usize> = HashMap::new();
        for me in &nodes {
            let peers = ring.neighbours(me, k);
            assert_eq!(peers.len(), k);
            assert!(!peers.contains(&me.as_str()));
            for peer in peers {
                *checkers.entry(peer.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(checkers.len(), nodes.len());
        assert!(checkers.values().all(|&c| c == k));
        assert_eq!(expected_checkers(nodes.len(), k), k);
    }

    #[test]
    fn one_node_more_or_less_moves_o_k_assignments() {
        let k = 10;
        let mut nodes = names(5000);
        let before = assignments(&nodes, k);
        nodes.push("node-new".into());
        let after = assignments(&nodes, k);
        let moved = before.symmetric_difference(&after).count();
        // The newcomer's k targets, its k checkers, and the k pairs those checkers gave up.
        assert!(moved <= 3 * k, "{moved} assignments moved");

        nodes.retain(|n| n != "node-02500");
        let removed = assignments(&nodes, k);
        let moved = after.symmetric_difference(&removed).count();
        assert!(moved <= 3 * k, "{moved} assignments moved");
    }

    #[test]
    fn similar_names_are_scattered() {
        // Nodes named after their addresses: a node's neighbours must not all be its namesakes.
        let nodes: Vec<String> = (0..1000)
            .map(|i| format!("ip-10-0-{}-{}", i / 250, i % 250))
            .collect();
        let ring = Ring::new(nodes.iter().map(String::as_str));
        let peers = ring.neighbours("ip-10-0-1-23", 10);
        let close = peers
            .iter()
            .filter(|p| p.starts_with("ip-10-0-1-2"))
            .count();
        assert!(close <= 2, "{peers:?}");
    }

    #[test]
    fn small_clusters_and_full_mesh() {
        let nodes = names(4);
        let all = nodes.iter().map(String::as_str);
        assert_eq!(
            neighbours("node-00000", all.clone(), 10),
            ["node-00001", "node-00002", "node-00003"]
        );
        assert_eq!(neighbours("node-00000", all.clone(), 0).len(), 3);
        assert_eq!(expected_checkers(4, 10), 3);
        assert_eq!(expected_checkers(4, 0), 3);
        assert_eq!(expected_checkers(1, 10), 0);
        // A node that is not (yet) in the list still gets a place on the ring.
        assert_eq!(neighbours("elsewhere", all, 2).len(), 2);
    }
}
