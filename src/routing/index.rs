//! The path index of a [`Router`](super::Router): a byte trie of every
//! configured prefix, so that a decision walks the request path once and
//! evaluates only the routes that can match it (see "Cost" in the module
//! docs of [`routing`](super)).

use super::Compiled;

/// Route indices by path prefix: a byte trie of every configured prefix.
#[derive(Debug, Clone)]
pub(super) struct PathIndex {
    /// Node 0 is the root (the empty prefix).
    nodes: Vec<Node>,
    /// Routes without `paths`, ascending.
    any: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children by next byte, sorted by byte.
    edges: Vec<(u8, usize)>,
    /// Empty unless a configured prefix ends here; then, ascending and
    /// deduplicated, every route with this prefix or a shorter configured
    /// prefix of it.
    candidates: Vec<usize>,
}

impl PathIndex {
    pub(super) fn build(routes: &[Compiled]) -> Self {
        let mut nodes = vec![Node::default()];
        let mut parent = vec![0usize];
        let mut any = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if r.paths.is_empty() {
                any.push(i);
                continue;
            }
            for p in &r.paths {
                let mut at = 0;
                for &b in p.as_bytes() {
                    let next = nodes.len();
                    let Some(node) = nodes.get_mut(at) else { break };
                    at = match node.edges.binary_search_by_key(&b, |e| e.0) {
                        Ok(k) => node.edges.get(k).map_or(at, |e| e.1),
                        Err(k) => {
                            node.edges.insert(k, (b, next));
                            nodes.push(Node::default());
                            parent.push(at);
                            next
                        }
                    };
                }
                if let Some(node) = nodes.get_mut(at) {
                    // Routes are visited in order, so pushing keeps the list
                    // ascending; a route listing a prefix twice is kept once.
                    if node.candidates.last() != Some(&i) {
                        node.candidates.push(i);
                    }
                }
            }
        }
        // A child always has a larger id than its parent, so one pass in id
        // order sees each node's ancestors finished: fold in the candidates of
        // the nearest terminal ancestor.
        let mut nearest_terminal: Vec<Option<usize>> = vec![None; nodes.len()];
        for n in 1..nodes.len() {
            let up = parent
                .get(n)
                .and_then(|&p| nearest_terminal.get(p).copied().flatten());
            let own_terminal = nodes.get(n).is_some_and(|node| !node.candidates.is_empty());
            if own_terminal {
                if let Some(up) = up {
                    let inherited = nodes.get(up).map(|u| u.candidates.clone());
                    if let (Some(inherited), Some(node)) = (inherited, nodes.get_mut(n)) {
                        node.candidates = merge_dedup(&inherited, &node.candidates);
                    }
                }
            }
            if let Some(slot) = nearest_terminal.get_mut(n) {
                *slot = if own_terminal { Some(n) } else { up };
            }
        }
        PathIndex { nodes, any }
    }

    /// Every route that can match `path`, ascending: those with a prefix of
    /// `path` plus those without `paths`.
    pub(super) fn candidates(&self, path: &[u8]) -> Merge<'_> {
        let mut deepest: &[usize] = &[];
        let mut at = 0;
        for &b in path {
            let next = self.nodes.get(at).and_then(|node| {
                let k = node.edges.binary_search_by_key(&b, |e| e.0).ok()?;
                node.edges.get(k).map(|e| e.1)
            });
            let Some(next) = next else { break };
            at = next;
            if let Some(node) = self.nodes.get(at) {
                if !node.candidates.is_empty() {
                    deepest = &node.candidates;
                }
            }
        }
        Merge {
            a: &self.any,
            b: deepest,
        }
    }
}

fn merge_dedup(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Merge { a, b }.collect();
    out.dedup();
    out
}

/// Ascending merge of two ascending slices.
#[derive(Debug)]
pub(super) struct Merge<'i> {
    a: &'i [usize],
    b: &'i [usize],
}

impl Iterator for Merge<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (self.a.split_first(), self.b.split_first()) {
            (Some((&x, ra)), Some((&y, _))) if x <= y => {
                self.a = ra;
                Some(x)
            }
            (_, Some((&y, rb))) => {
                self.b = rb;
                Some(y)
            }
            (Some((&x, ra)), None) => {
                self.a = ra;
                Some(x)
            }
            (None, None) => None,
        }
    }
}
