//! Shard scaling: [`ScalingPolicy`], [`ScalingDecision`], [`ScalingError`], and the rule
//! that turns live stats into a decision.
//!
//! The rule reads the mean fill of the active shards' rings (queued and in-flight events over
//! ring capacity) and whether producers were refused for backpressure since the last look:
//! - above `target_fill_ratio` (or any backpressure refusal): scale up by enough shards to
//!   bring the mean fill back to the target, at least one, at most up to `max_shards`;
//! - below a quarter of the target for at least `scale_down_delay`: scale down towards the
//!   target, newest shards first, never below `min_shards`;
//! - within `cooldown` of the last change, or otherwise: no change, with the reason.

use std::time::{Duration, Instant};
use thiserror::Error;

/// When and how far the bus may change its number of shards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalingPolicy {
    /// The mean ring fill (0.0..=1.0) the bus aims for.
    pub target_fill_ratio: f64,
    /// Never fewer active shards than this.
    pub min_shards: u16,
    /// Never more active shards than this.
    pub max_shards: u16,
    /// No change is made within this long of the previous one.
    pub cooldown: Duration,
    /// Load must stay low this long before shards are removed.
    pub scale_down_delay: Duration,
    /// How often the monitor (when enabled) looks at the stats.
    pub check_interval: Duration,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            target_fill_ratio: 0.5,
            min_shards: 1,
            max_shards: 64,
            cooldown: Duration::from_secs(10),
            scale_down_delay: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
        }
    }
}

impl ScalingPolicy {
    /// Sets [`ScalingPolicy::target_fill_ratio`].
    pub fn target_fill_ratio(mut self, ratio: f64) -> Self {
        self.target_fill_ratio = ratio;
        self
    }

    /// Sets [`ScalingPolicy::min_shards`].
    pub fn min_shards(mut self, n: u16) -> Self {
        self.min_shards = n;
        self
    }

    /// Sets [`ScalingPolicy::max_shards`].
    pub fn max_shards(mut self, n: u16) -> Self {
        self.max_shards = n;
        self
    }

    /// Sets [`ScalingPolicy::cooldown`].
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cooldown = d;
        self
    }

    /// Sets [`ScalingPolicy::scale_down_delay`].
    pub fn scale_down_delay(mut self, d: Duration) -> Self {
        self.scale_down_delay = d;
        self
    }

    /// Sets [`ScalingPolicy::check_interval`].
    pub fn check_interval(mut self, d: Duration) -> Self {
        self.check_interval = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.target_fill_ratio > 0.0 && self.target_fill_ratio <= 1.0) {
            return Err(format!(
                "target_fill_ratio {} is not in (0, 1]",
                self.target_fill_ratio
            ));
        }
        if self.min_shards == 0 || self.min_shards > self.max_shards {
            return Err("min_shards must be at least 1 and at most max_shards".into());
        }
        if usize::from(self.max_shards) > crate::routing::SLOTS {
            return Err(format!("max_shards is above {}", crate::routing::SLOTS));
        }
        if self.check_interval.is_zero() {
            return Err("check_interval must be non-zero".into());
        }
        Ok(())
    }
}

/// What [`crate::EventBus::suggest_scaling`] proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScalingDecision {
    /// Add this many shards.
    ScaleUp(u16),
    /// Retire these shards.
    ScaleDown(Vec<u16>),
    /// Leave the shards as they are, for this reason.
    NoChange(String),
}

/// Why a scaling call was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScalingError {
    /// Removing these shards would leave none (or fewer than the policy's `min_shards`).
    #[error("cannot go below {min} active shard(s)")]
    BelowMinimum {
        /// The floor.
        min: u16,
    },
    /// The id names no shard, or a shard already retired.
    #[error("unknown or retired shard {0}")]
    UnknownShard(u16),
    /// Adding would exceed the maximum number of active shards (or exhaust shard ids).
    #[error("cannot exceed {max} active shards")]
    AboveMaximum {
        /// The ceiling.
        max: usize,
    },
    /// `add_shards(0)`.
    #[error("the shard count to add must be at least 1")]
    ZeroCount,
    /// The bus is shutting down.
    #[error("the bus is shutting down")]
    ShuttingDown,
    /// The removed shards were still draining when the deadline (`shutdown_timeout`)
    /// passed. They are retired and keep draining in the background.
    #[error("removed shards still draining after {0:?}")]
    DrainTimeout(Duration),
}

/// What the rule remembers between looks.
#[derive(Debug, Default)]
pub(crate) struct ScalingState {
    pub(crate) last_change: Option<Instant>,
    pub(crate) low_since: Option<Instant>,
    pub(crate) last_backpressure: u64,
}

/// What the rule looks at.
pub(crate) struct Observation<'a> {
    /// Active shard ids (ascending) with their depth.
    pub(crate) active: &'a [(u16, u64)],
    pub(crate) ring_capacity: usize,
    /// Total backpressure refusals so far.
    pub(crate) backpressure: u64,
    pub(crate) now: Instant,
}

pub(crate) fn decide(
    policy: &ScalingPolicy,
    state: &mut ScalingState,
    seen: &Observation<'_>,
) -> ScalingDecision {
    let active = seen.active.len();
    let refused = seen.backpressure > state.last_backpressure;
    state.last_backpressure = seen.backpressure;
    if active == 0 {
        return ScalingDecision::NoChange("no active shard".into());
    }
    let capacity = seen.ring_capacity.max(1) as f64;
    let fill = seen
        .active
        .iter()
        .map(|&(_, depth)| (depth as f64 / capacity).min(1.0))
        .sum::<f64>()
        / active as f64;
    let pressure = if refused { fill.max(1.0) } else { fill };
    if let Some(last) = state.last_change {
        let since = seen.now.saturating_duration_since(last);
        if since < policy.cooldown {
            return ScalingDecision::NoChange(format!(
                "cooling down for another {:?}",
                policy.cooldown - since
            ));
        }
    }
    let target = policy.target_fill_ratio;
    if pressure > target {
        state.low_since = None;
        let room = usize::from(policy.max_shards).saturating_sub(active);
        if room == 0 {
            return ScalingDecision::NoChange(format!(
                "fill {pressure:.2} above target {target:.2}, but already at max_shards"
            ));
        }
        let wanted = ((active as f64) * pressure / target).ceil() as usize;
        let add = wanted.saturating_sub(active).clamp(1, room);
        return ScalingDecision::ScaleUp(add as u16);
    }
    if pressure < target / 4.0 && active > usize::from(policy.min_shards) {
        let low_since = *state.low_since.get_or_insert(seen.now);
        let low_for = seen.now.saturating_duration_since(low_since);
        if low_for < policy.scale_down_delay {
            return ScalingDecision::NoChange(format!(
                "fill {pressure:.2} is low; waiting {:?} more before scaling down",
                policy.scale_down_delay - low_for
            ));
        }
        let needed = (((active as f64) * pressure / target).ceil() as usize)
            .max(usize::from(policy.min_shards))
            .max(1);
        let remove = active.saturating_sub(needed).max(1);
        let ids = seen
            .active
            .iter()
            .rev()
            .take(remove)
            .map(|&(id, _)| id)
            .collect();
        return ScalingDecision::ScaleDown(ids);
    }
    state.low_since = None;
    ScalingDecision::NoChange(format!("fill {pressure:.2} is within target {target:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(
        policy: &ScalingPolicy,
        state: &mut ScalingState,
        depths: &[u64],
        backpressure: u64,
        at: Instant,
    ) -> ScalingDecision {
        let active: Vec<(u16, u64)> = depths
            .iter()
            .enumerate()
            .map(|(i, &d)| (i as u16, d))
            .collect();
        decide(
            policy,
            state,
            &Observation {
                active: &active,
                ring_capacity: 100,
                backpressure,
                now: at,
            },
        )
    }

    #[test]
    fn full_rings_scale_up_within_max_and_cooldown() {
        let policy = ScalingPolicy::default()
            .max_shards(6)
            .cooldown(Duration::from_secs(5));
        let mut state = ScalingState::default();
        let t0 = Instant::now();
        assert_eq!(
            look(&policy, &mut state, &[90, 90], 0, t0),
            ScalingDecision::ScaleUp(2)
        );
        state.last_change = Some(t0);
        assert!(
            matches!(look(&policy, &mut state, &[90, 90], 0, t0 + Duration::from_secs(1)), ScalingDecision::NoChange(r) if r.contains("cooling"))
        );
        // Capped by max_shards.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            look(&policy, &mut state, &[100; 5], 0, later),
            ScalingDecision::ScaleUp(1)
        );
        assert!(
            matches!(look(&policy, &mut state, &[100; 6], 0, later), ScalingDecision::NoChange(r) if r.contains("max_shards"))
        );
        // A refusal counts as full even when the rings look empty now.
        assert_eq!(
            look(&policy, &mut state, &[0, 0], 7, later),
            ScalingDecision::ScaleUp(2)
        );
    }

    #[test]
    fn idle_rings_scale_down_after_the_delay_and_never_below_min() {
        let policy = ScalingPolicy::default()
            .min_shards(2)
            .scale_down_delay(Duration::from_secs(30));
        let mut state = ScalingState::default();
        let t0 = Instant::now();
        assert!(
            matches!(look(&policy, &mut state, &[0; 5], 0, t0), ScalingDecision::NoChange(r) if r.contains("waiting"))
        );
        let later = t0 + Duration::from_secs(31);
        assert_eq!(
            look(&policy, &mut state, &[0; 5], 0, later),
            ScalingDecision::ScaleDown(vec![4, 3, 2])
        );
        assert!(matches!(
            look(&policy, &mut state, &[0; 2], 0, later),
            ScalingDecision::NoChange(_)
        ));
        // Load in between resets the delay.
        let mut state = ScalingState::default();
        look(&policy, &mut state, &[0; 5], 0, t0);
        look(
            &policy,
            &mut state,
            &[40; 5],
            0,
            t0 + Duration::from_secs(20),
        );
        assert!(matches!(
            look(&policy, &mut state, &[0; 5], 0, later),
            ScalingDecision::NoChange(_)
        ));
    }

    #[test]
    fn policies_are_validated() {
        assert!(ScalingPolicy::default().validate().is_ok());
        assert!(ScalingPolicy::default()
            .target_fill_ratio(0.0)
            .validate()
            .is_err());
        assert!(ScalingPolicy::default()
            .target_fill_ratio(f64::NAN)
            .validate()
            .is_err());
        assert!(ScalingPolicy::default().min_shards(0).validate().is_err());
        assert!(ScalingPolicy::default()
            .min_shards(9)
            .max_shards(8)
            .validate()
            .is_err());
        assert!(ScalingPolicy::default()
            .check_interval(Duration::ZERO)
            .validate()
            .is_err());
    }
}
