//! One live subscription per group and bus. Closing a Kafka or MQTT
//! subscription finishes in the background (final offset commit, last PUBACKs);
//! the next subscription of the group waits for that, or it would be handed
//! messages its predecessor had already processed.

use crate::BusError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Held by a subscription until it has fully closed.
pub(crate) type GroupLease = OwnedMutexGuard<()>;

#[derive(Debug, Default)]
pub(crate) struct Groups {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Groups {
    /// Waits up to `wait` for `group`'s previous subscription to close.
    pub(crate) async fn lease(&self, group: &str, wait: Duration) -> Result<GroupLease, BusError> {
        let lock = self.locks.lock().unwrap().entry(group.to_string()).or_default().clone();
        match tokio::time::timeout(wait, lock.lock_owned()).await {
            Ok(lease) => Ok(lease),
            Err(_) => Err(BusError::GroupBusy { group: group.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_is_leased_once_at_a_time() {
        let groups = Groups::default();
        let first = groups.lease("g", Duration::ZERO).await.unwrap();
        assert_eq!(groups.lease("g", Duration::from_millis(10)).await.unwrap_err(), BusError::GroupBusy { group: "g".into() });
        let _other = groups.lease("h", Duration::ZERO).await.unwrap();
        drop(first);
        groups.lease("g", Duration::ZERO).await.unwrap();
    }
}
