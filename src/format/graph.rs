//! The graph section of a segment (storage-format.md, "Graph section"): a 32-byte header followed by
//! `doc_count × max_degree` little-endian u32 neighbour ids, node id = document ordinal, each record
//! padded with `u32::MAX`.
//!
//! | offset | size | type | name | meaning |
//! |---|---|---|---|---|
//! | 0 | 4 | u32 | `max_degree` | R, slots per node, 2..=256 |
//! | 4 | 4 | u32 | `entry_point` | ordinal where searches start (the medoid) |
//! | 8 | 4 | u32 | `build_dim` | dimension of the build vectors (informational) |
//! | 12 | 4 | u32 | `build_list` | L used while building (informational) |
//! | 16 | 4 | f32 | `alpha` | α of the second pass (informational) |
//! | 20 | 12 | — | reserved | 0 |
//! | 32 | n·R·4 | u32[] | `slots` | neighbour ids |

use super::{read_u32, DecodeError};
use crate::graph::Adjacency;

/// Length of the section header.
pub const GRAPH_HEADER_LEN: usize = 32;

const G_MAX_DEGREE: usize = 0;
const G_ENTRY: usize = 4;
const G_BUILD_DIM: usize = 8;
const G_BUILD_LIST: usize = 12;
const G_ALPHA: usize = 16;
const G_RESERVED: usize = 20;
const _: () = assert!(G_RESERVED + 12 == GRAPH_HEADER_LEN);

/// The graph section header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphHeader {
    /// Slots per node.
    pub max_degree: u32,
    /// Entry point ordinal.
    pub entry_point: u32,
    /// Build-vector dimension.
    pub build_dim: u32,
    /// Build list size.
    pub build_list: u32,
    /// α of the second pass.
    pub alpha: f32,
}

/// Encodes a whole graph section.
pub fn encode(adj: &Adjacency, header: &GraphHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(GRAPH_HEADER_LEN + adj.slots.len() * 4);
    out.extend_from_slice(&header.max_degree.to_le_bytes());
    out.extend_from_slice(&header.entry_point.to_le_bytes());
    out.extend_from_slice(&header.build_dim.to_le_bytes());
    out.extend_from_slice(&header.build_list.to_le_bytes());
    out.extend_from_slice(&header.alpha.to_le_bytes());
    out.extend_from_slice(&[0u8; 12]);
    out.extend(adj.slots.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Decodes and checks the header of a graph section of `bytes` for `nodes` documents: degree in
/// range, entry point a node, reserved bytes zero, and the length exactly header + `nodes × R × 4`.
pub fn decode_header(bytes: &[u8], nodes: u64) -> Result<GraphHeader, DecodeError> {
    if bytes.len() < GRAPH_HEADER_LEN {
        return Err(DecodeError::new(0, format!("graph section of {} bytes is shorter than its header", bytes.len())));
    }
    let h = GraphHeader {
        max_degree: read_u32(bytes, G_MAX_DEGREE)?,
        entry_point: read_u32(bytes, G_ENTRY)?,
        build_dim: read_u32(bytes, G_BUILD_DIM)?,
        build_list: read_u32(bytes, G_BUILD_LIST)?,
        alpha: f32::from_bits(read_u32(bytes, G_ALPHA)?),
    };
    if !(2..=256).contains(&h.max_degree) {
        return Err(DecodeError::new(G_MAX_DEGREE, format!("graph degree {} is outside 2..=256", h.max_degree)));
    }
    if h.entry_point as u64 >= nodes {
        return Err(DecodeError::new(
            G_ENTRY,
            format!("graph entry point {} is not one of {nodes} nodes", h.entry_point),
        ));
    }
    if bytes[G_RESERVED..GRAPH_HEADER_LEN].iter().any(|&b| b != 0) {
        return Err(DecodeError::new(G_RESERVED, "reserved graph header bytes are not zero"));
    }
    let want = nodes.checked_mul(h.max_degree as u64 * 4).and_then(|v| v.checked_add(GRAPH_HEADER_LEN as u64));
    if want != Some(bytes.len() as u64) {
        return Err(DecodeError::new(
            0,
            format!("graph section is {} bytes, {nodes} nodes of degree {} need {want:?}", bytes.len(), h.max_degree),
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphView, Neighbors, NO_NEIGHBOR};

    #[test]
    fn section_round_trips_into_a_view() {
        let adj = Adjacency {
            max_degree: 3,
            entry_point: 2,
            slots: vec![1, 2, NO_NEIGHBOR, 0, NO_NEIGHBOR, NO_NEIGHBOR, 0, 1, 3, 2, NO_NEIGHBOR, NO_NEIGHBOR],
        };
        let header = GraphHeader { max_degree: 3, entry_point: 2, build_dim: 8, build_list: 16, alpha: 1.2 };
        let bytes = encode(&adj, &header);
        assert_eq!(decode_header(&bytes, 4).unwrap(), header);
        assert!(decode_header(&bytes, 5).is_err(), "length must match the node count");
        assert!(decode_header(&bytes, 2).is_err(), "entry point must be a node");
        let slots: Vec<u32> =
            bytes[GRAPH_HEADER_LEN..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let path = std::path::Path::new("g");
        let view = GraphView::new(path, 0, 3, 2, &slots).unwrap();
        view.validate_all().unwrap();
        for node in 0..4 {
            let mut got = Vec::new();
            view.neighbors_into(node, &mut got).unwrap();
            assert_eq!(got, adj.neighbors(node).collect::<Vec<_>>());
        }
        let mut reserved = bytes.clone();
        reserved[25] = 1;
        assert!(decode_header(&reserved, 4).is_err());
        // A hole followed by an id, a self loop and an out-of-range id are all corruption.
        for bad in [[NO_NEIGHBOR, 1, NO_NEIGHBOR], [0, 1, NO_NEIGHBOR], [7, NO_NEIGHBOR, NO_NEIGHBOR]] {
            let mut s = slots.clone();
            s[..3].copy_from_slice(&bad);
            let view = GraphView::new(path, 0, 3, 2, &s).unwrap();
            assert!(view.validate_all().is_err(), "{bad:?}");
        }
    }
}
