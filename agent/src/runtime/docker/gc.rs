//! The image GC's I/O edge: which images this agent's instances used are in
//! use now, how full Docker's disk is, and removing what `image_gc::choose` picks.

use super::{docker_message, status_code, DockerRuntime};
use crate::image_gc::{choose, Candidate, Policy};
use crate::runtime::RuntimeError;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptionsBuilder};
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;
use sysinfo::{DiskRefreshKind, Disks};
use tracing::debug;

impl DockerRuntime {
    /// Notes that an instance is starting with `image`: from now on the GC watches it.
    pub(super) fn note_used(&self, image: &str) {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(image.to_string(), Instant::now());
    }

    /// One GC pass: refreshes when each watched image was last in use and
    /// removes those `policy` lets go. Removal is never forced, so Docker itself
    /// refuses an image a container took meanwhile. Returns what was removed.
    pub async fn collect_images(&self, policy: &Policy) -> Result<Vec<String>, RuntimeError> {
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let containers = self.docker.list_containers(Some(options)).await.map_err(|e| RuntimeError::Backend(format!("listing containers: {}", docker_message(&e))))?;
        let in_use: HashSet<String> = containers.into_iter().filter_map(|c| c.image_id).collect();
        let watched: Vec<(String, Instant)> = self.used.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(r, t)| (r.clone(), *t)).collect();
        let now = Instant::now();
        let mut candidates = Vec::new();
        for (reference, last_used) in watched {
            match self.docker.inspect_image(&reference).await {
                Ok(image) => {
                    let used_now = image.id.is_some_and(|id| in_use.contains(&id));
                    candidates.push(Candidate { reference, in_use: used_now, last_used: if used_now { now } else { last_used } });
                }
                // Not (or no longer) on the host. A fresh note is a start still pulling it: keep
                // watching. An old one was removed by other means: nothing left to watch.
                Err(e) if status_code(&e) == Some(404) => {
                    if now.saturating_duration_since(last_used) >= policy.min_unused {
                        self.used.lock().unwrap_or_else(|p| p.into_inner()).remove(&reference);
                    }
                }
                Err(e) => return Err(RuntimeError::Backend(format!("inspecting image {reference}: {}", docker_message(&e)))),
            }
        }
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            for c in candidates.iter().filter(|c| c.in_use) {
                used.insert(c.reference.clone(), now);
            }
        }
        let disk = self.docker_disk_percent().await?;
        let chosen: Vec<String> = choose(&candidates, disk, policy, now).into_iter().map(str::to_string).collect();
        debug!(disk_percent = disk, watched = candidates.len(), in_use = candidates.iter().filter(|c| c.in_use).count(), chosen = chosen.len(), "image GC pass");
        let mut removed = Vec::new();
        for reference in chosen {
            let options = RemoveImageOptionsBuilder::default().force(false).build();
            match self.docker.remove_image(&reference, Some(options), None).await {
                Ok(_) => {
                    self.used.lock().unwrap_or_else(|p| p.into_inner()).remove(&reference);
                    self.images.forget(&reference);
                    removed.push(reference);
                }
                // A container took it since the listing (409), or it went (404): the next pass sees.
                Err(e) => debug!(image = %reference, error = %docker_message(&e), disk_percent = disk, "image GC left an image"),
            }
        }
        Ok(removed)
    }

    /// How full (percent) the disk holding Docker's data directory is.
    async fn docker_disk_percent(&self) -> Result<f64, RuntimeError> {
        let info = self.docker.info().await.map_err(|e| RuntimeError::Backend(format!("asking Docker for its data directory: {}", docker_message(&e))))?;
        let root = info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into());
        // Off the runtime's thread: statvfs on a stuck mount blocks.
        let task = tokio::task::spawn_blocking(move || disk_percent(Path::new(&root)));
        task.await.map_err(|e| RuntimeError::Backend(format!("measuring Docker's disk: {e}")))?
    }
}

/// How full the mount holding `dir` is. Only that mount is measured: statvfs
/// on every mount would also touch stuck network or FUSE mounts.
fn disk_percent(dir: &Path) -> Result<f64, RuntimeError> {
    let mut disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing());
    // The mount holding the directory: the longest mount point it lies under.
    let disk = disks.list_mut().iter_mut().filter(|d| dir.starts_with(d.mount_point())).max_by_key(|d| d.mount_point().as_os_str().len());
    let disk = disk.ok_or_else(|| RuntimeError::Backend(format!("no mounted disk holds Docker's data directory {}", dir.display())))?;
    disk.refresh_specifics(DiskRefreshKind::nothing().with_storage());
    let total = disk.total_space().max(1) as f64;
    Ok((total - disk.available_space() as f64) / total * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_mount_holding_a_directory() {
        let percent = disk_percent(&std::env::temp_dir()).unwrap();
        assert!((0.0..=100.0).contains(&percent), "{percent}");
    }
}
