//! How the kernel schedules the gateway's serving threads.
//!
//! A proxy thread on a small host shares its cores with its clients and the
//! functions behind it. Under the default policy a thread woken by one ready
//! socket preempts whoever runs at once, handles that one event and sleeps
//! again: one wake-up, and two context switches, per request. `SCHED_BATCH`
//! tells the kernel the thread is throughput-bound, so a wake-up does not
//! preempt; by the time the thread runs several sockets are ready and one
//! `epoll_wait` serves them all (bench/README.md, B3: the gateway's wake-ups
//! per request fell to nginx's). Moving to `SCHED_BATCH` needs no privilege;
//! its nice value, and so its share of the CPU, stays what it was.

/// `--gateway-scheduling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayScheduling {
    /// `SCHED_BATCH`: no preemption on wake-up; requests are taken in batches.
    #[default]
    Batch,
    /// The process's own policy (normally `SCHED_OTHER`), unchanged.
    Normal,
}

impl GatewayScheduling {
    /// Applies the policy to the calling thread. A failure is returned for the
    /// caller to log: the thread then serves under its inherited policy.
    pub fn apply_to_this_thread(self) -> std::io::Result<()> {
        match self {
            GatewayScheduling::Normal => Ok(()),
            GatewayScheduling::Batch => set_this_thread_policy(libc::SCHED_BATCH),
        }
    }
}

/// On Linux a pid of 0 names the calling thread, not the whole process.
/// The project's one `unsafe`: neither std nor tokio wraps this call.
#[allow(unsafe_code)]
fn set_this_thread_policy(policy: libc::c_int) -> std::io::Result<()> {
    // Batch and other non-real-time policies take priority 0.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    match unsafe { libc::sched_setscheduler(0, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn policy_of_this_thread() -> libc::c_int {
        // SAFETY: no arguments beyond the calling thread's id.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn batch_applies_to_the_calling_thread_only() {
        let before = policy_of_this_thread();
        let (inside, outside) = std::thread::scope(|s| {
            let inside = s.spawn(|| {
                GatewayScheduling::Batch.apply_to_this_thread().expect("SCHED_BATCH needs no privilege");
                policy_of_this_thread()
            });
            let inside = inside.join().expect("thread");
            (inside, policy_of_this_thread())
        });
        assert_eq!(inside, libc::SCHED_BATCH);
        assert_eq!(outside, before, "other threads keep their policy");
    }

    #[test]
    fn normal_leaves_the_policy_alone() {
        let policy = std::thread::spawn(|| {
            GatewayScheduling::Normal.apply_to_this_thread().expect("nothing to do");
            policy_of_this_thread()
        })
        .join()
        .expect("thread");
        assert_eq!(policy, policy_of_this_thread(), "a new thread inherits its creator's policy; Normal keeps it");
    }
}
