//! How a placement group's (or gang's) bundles spread over nodes: the four strategies Ray names,
//! parsed from and printed as their wire names. Shared by group placement (`groups.rs`),
//! preemption planning (`preemption.rs`) and pending demand (`demand.rs`).

/// How a group's bundles spread over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// As few nodes as possible (best effort).
    #[default]
    Pack,
    /// As many nodes as possible (best effort).
    Spread,
    /// All bundles on one node, or not placed.
    StrictPack,
    /// Every bundle on a different node, or not placed.
    StrictSpread,
}

impl Strategy {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PACK" | "" => Strategy::Pack,
            "SPREAD" => Strategy::Spread,
            "STRICT_PACK" => Strategy::StrictPack,
            "STRICT_SPREAD" => Strategy::StrictSpread,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pack => "PACK",
            Strategy::Spread => "SPREAD",
            Strategy::StrictPack => "STRICT_PACK",
            Strategy::StrictSpread => "STRICT_SPREAD",
        }
    }
}
