//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.
//!
//! The tree over leaves `D[0..n)` is the RFC's: a leaf hashes as `SHA-256(0x00 ‖ data)`,
//! an interior node as `SHA-256(0x01 ‖ left ‖ right)`, and a tree of `n > 1` leaves
//! splits at `k`, the largest power of two below `n`.
//!
//! The server stores the hash of every *complete* subtree (a node at `level` covering
//! leaves `[idx·2^level, (idx+1)·2^level)`), so any range hash a proof needs is a fold
//! of at most 64 stored nodes. Proofs are computed in two passes over a node source:
//! [`needed`] lists the nodes a proof reads (one query fetches them all), then the proof
//! functions compute from the fetched map. The verifiers need none of that; they are
//! what an offline checker runs (`ocsuite receipts verify`).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A complete subtree: `(level, idx)`.
pub type NodeKey = (u32, u64);

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    let p = 1u64 << (63 - (n - 1).leading_zeros());
    if p == n { p / 2 } else { p }
}

/// Where range hashes come from: stored complete-subtree nodes.
pub trait Nodes {
    fn node(&mut self, key: NodeKey) -> Hash;
}

/// A node source that only records which nodes were asked for.
#[derive(Default)]
pub struct Recorder(pub Vec<NodeKey>);

impl Nodes for Recorder {
    fn node(&mut self, key: NodeKey) -> Hash {
        self.0.push(key);
        [0; 32]
    }
}

/// Fetched nodes; a missing one reads as zeros (the caller fetched [`needed`] first).
impl Nodes for HashMap<NodeKey, Hash> {
    fn node(&mut self, key: NodeKey) -> Hash {
        self.get(&key).copied().unwrap_or([0; 32])
    }
}

/// `MTH(D[start..end))` where `start` is a multiple of the largest power of two not
/// above `end - start` (true of every range the RFC's proofs read).
fn range_hash(nodes: &mut impl Nodes, start: u64, end: u64) -> Hash {
    let len = end - start;
    if len.is_power_of_two() {
        let level = len.trailing_zeros();
        return nodes.node((level, start >> level));
    }
    let k = split(len);
    let left = range_hash(nodes, start, start + k);
    let right = range_hash(nodes, start + k, end);
    node_hash(&left, &right)
}

/// The root of the first `size` leaves (`size ≥ 1`).
pub fn root(nodes: &mut impl Nodes, size: u64) -> Hash {
    range_hash(nodes, 0, size)
}

/// RFC 9162 §2.1.3.1 `PATH(m, D[start..end))`.
fn path(nodes: &mut impl Nodes, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(nodes, m, start, start + k, out);
        out.push(range_hash(nodes, start + k, end));
    } else {
        path(nodes, m - k, start + k, end, out);
        out.push(range_hash(nodes, start, start + k));
    }
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(nodes: &mut impl Nodes, index: u64, size: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    if index < size {
        path(nodes, index, 0, size, &mut out);
    }
    out
}

/// RFC 9162 §2.1.4.1 `SUBPROOF(m, D[start..end), b)`.
fn subproof(
    nodes: &mut impl Nodes,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(nodes, start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, start, start + k, complete, out);
        out.push(range_hash(nodes, start + k, end));
    } else {
        subproof(nodes, m - k, start + k, end, false, out);
        out.push(range_hash(nodes, start, start + k));
    }
}

/// The consistency proof between the trees of `old` and `new` leaves (`0 < old ≤ new`).
pub fn consistency_proof(nodes: &mut impl Nodes, old: u64, new: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    if 0 < old && old < new {
        subproof(nodes, old, 0, new, true, &mut out);
    }
    out
}

/// The stored nodes `f` reads, for fetching them in one query.
pub fn needed(f: impl FnOnce(&mut Recorder)) -> Vec<NodeKey> {
    let mut r = Recorder::default();
    f(&mut r);
    r.0.sort_unstable();
    r.0.dedup();
    r.0
}

/// The complete subtrees that appending leaf `index` completes, bottom up: the leaf
/// itself at level 0, then each level whose subtree the leaf closes. Each needs its
/// left sibling, which is either computed in the same batch or already stored.
pub fn completed_by(index: u64) -> impl Iterator<Item = NodeKey> {
    let closes = (index + 1).trailing_zeros();
    (0..=closes).map(move |level| (level, index >> level))
}

/// RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in a tree of `size` with
/// `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree of `old` leaves with `old_root` to be
/// a prefix of the tree of `new` leaves with `new_root`?
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    fr == *old_root && sr == *new_root && s_n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every complete subtree of `leaves`, as the server stores them.
    fn store(leaves: &[Hash]) -> HashMap<NodeKey, Hash> {
        let mut m = HashMap::new();
        for (i, l) in leaves.iter().enumerate() {
            let i = i as u64;
            m.insert((0, i), *l);
            for (level, idx) in completed_by(i).skip(1) {
                let left = m[&(level - 1, idx * 2)];
                let right = m[&(level - 1, idx * 2 + 1)];
                m.insert((level, idx), node_hash(&left, &right));
            }
        }
        m
    }

    /// The RFC's recursive definition over all leaves, for comparison.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn proofs_from_stored_nodes_verify() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut nodes = store(&leaves);
        for n in 1..=leaves.len() as u64 {
            let r = root(&mut nodes, n);
            assert_eq!(r, mth(&leaves[..n as usize]), "root of {n}");
            for m in 0..n {
                let p = inclusion_proof(&mut nodes, m, n);
                assert!(
                    verify_inclusion(m, n, &leaves[m as usize], &p, &r),
                    "{m} in {n}"
                );
                assert!(!verify_inclusion(m, n, &leaves[(m as usize + 1) % 70], &p, &r) || n == 1);
            }
            for old in 1..=n {
                let p = consistency_proof(&mut nodes, old, n);
                let old_root = root(&mut nodes, old);
                assert!(verify_consistency(old, n, &old_root, &r, &p), "{old} → {n}");
                if old < n {
                    assert!(!verify_consistency(old, n, &leaves[0], &r, &p) || old == 1);
                }
            }
        }
    }

    #[test]
    fn needed_lists_what_a_proof_reads() {
        let keys = needed(|r| {
            inclusion_proof(r, 5, 1_000_000);
        });
        assert!(keys.len() <= 64 && !keys.is_empty());
    }
}
