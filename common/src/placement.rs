//! Where a function's instances may go and which nodes they prefer: the
//! placement part of a function spec.

use crate::ids::FunctionName;
use crate::labels::{self, Labels};
use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};

/// How instances of one function spread over the nodes that can take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fill the fullest node that fits first: fewer busy hosts, more room for big instances.
    Binpack,
    /// Prefer the node with the fewest of this function's instances, then the
    /// emptiest: a lost host takes fewer instances with it.
    #[default]
    Spread,
}

/// Placement constraints and preferences of a function.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(default)]
    pub strategy: Strategy,
    /// Only nodes carrying every one of these labels take instances.
    #[serde(default)]
    pub node_selector: Labels,
    /// Most instances of this function on one node (none: only capacity limits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_node: Option<u32>,
    /// Never on a node that runs one of these functions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anti_affinity: Vec<FunctionName>,
}

/// Most functions one anti-affinity list may name.
pub const MAX_ANTI_AFFINITY: usize = 32;

impl PlacementSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        labels::validate("node_selector", &self.node_selector)?;
        if let Some(n) = self.max_per_node {
            if n == 0 || n > 1000 {
                return Err(ValidationError::new("max_per_node", format!("{n} is out of range: use 1 to 1000, or leave it out")));
            }
        }
        if self.anti_affinity.len() > MAX_ANTI_AFFINITY {
            return Err(ValidationError::new("anti_affinity", format!("{} functions: name at most {MAX_ANTI_AFFINITY}", self.anti_affinity.len())));
        }
        Ok(())
    }
}
