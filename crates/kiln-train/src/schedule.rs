//! Learning rate per optimiser step: linear warm-up, then cosine or step decay (timm's
//! schedulers, stepped per iteration rather than per epoch) or mmseg's poly decay.

use crate::config::schema::{ScheduleName, ScheduleSection};

/// The learning rate of every optimiser step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    base_lr: f64,
    warmup_lr: f64,
    min_lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    steps_per_epoch: usize,
    name: ScheduleName,
    decay_epochs: f64,
    decay_rate: f64,
    power: f64,
}

impl LrSchedule {
    /// The schedule of `section` for `steps_per_epoch` optimiser steps per epoch.
    pub fn new(section: &ScheduleSection, base_lr: f64, steps_per_epoch: usize) -> Self {
        let warmup_steps = section
            .warmup_iters
            .unwrap_or_else(|| section.warmup_epochs.unwrap_or(0) * steps_per_epoch);
        LrSchedule {
            base_lr,
            warmup_lr: section.warmup_lr,
            min_lr: section.min_lr,
            warmup_steps,
            total_steps: section.iters.unwrap_or(section.epochs * steps_per_epoch),
            steps_per_epoch,
            name: section.name,
            decay_epochs: section.decay_epochs,
            decay_rate: section.decay_rate,
            power: section.power,
        }
    }

    /// Learning rate of optimiser step `step` (from 0).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let t = step as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * t;
        }
        match self.name {
            ScheduleName::Cosine => {
                let span = (self.total_steps - self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            ScheduleName::Poly => {
                let span = (self.total_steps - self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.min_lr + (self.base_lr - self.min_lr) * (1.0 - t).powf(self.power)
            }
            ScheduleName::Step => {
                let epoch = step as f64 / self.steps_per_epoch.max(1) as f64;
                let decays = (epoch / self.decay_epochs.max(f64::MIN_POSITIVE)).floor();
                (self.base_lr * self.decay_rate.powf(decays)).max(self.min_lr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: ScheduleName) -> ScheduleSection {
        let mut s: ScheduleSection = toml::from_str("").unwrap();
        s.name = name;
        s.epochs = 3;
        s.warmup_epochs = Some(1);
        s.warmup_iters = None;
        s.warmup_lr = 0.0;
        s.min_lr = 0.0;
        s.decay_epochs = 1.0;
        s.decay_rate = 0.1;
        s
    }

    #[test]
    fn warmup_is_linear_then_cosine_reaches_min() {
        let s = LrSchedule::new(&section(ScheduleName::Cosine), 1.0, 10);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(20) - 0.5).abs() < 1e-12, "half-way through the cosine");
        assert!(s.lr(29) < 0.01 && s.lr(29) > 0.0);
        assert!(s.lr(30).abs() < 1e-12);
    }

    #[test]
    fn step_decays_by_rate_each_period() {
        let s = LrSchedule::new(&section(ScheduleName::Step), 1.0, 10);
        assert!((s.lr(15) - 0.1).abs() < 1e-12);
        assert!((s.lr(25) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn poly_over_iterations_after_warmup_as_mmseg() {
        // mmseg: LinearLR for the warm-up, then PolyLR(power, eta_min) from its end to `iters`
        let mut poly = section(ScheduleName::Poly);
        (poly.iters, poly.warmup_epochs, poly.warmup_iters, poly.power, poly.min_lr) = (Some(110), None, Some(10), 2.0, 0.1);
        // steps_per_epoch plays no part in an iteration-based length
        let s = LrSchedule::new(&poly, 1.1, 7);
        assert!((s.lr(10) - 1.1).abs() < 1e-12);
        // a quarter through the poly span: 0.1 + 1.0 · 0.75²
        assert!((s.lr(35) - (0.1 + 0.5625)).abs() < 1e-12);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        poly.power = 1.0;
        let linear = LrSchedule::new(&poly, 1.1, 7);
        assert!((linear.lr(60) - 0.6).abs() < 1e-12, "power 1 is linear");
    }
}
