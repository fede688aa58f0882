//! What `lem experiment` and `lem batch` show while their sweep runs: one progress bar
//! per runner (hidden when stderr is not a terminal), a line per stored cycle, the
//! batch's headers and waits, and a summary when an experiment's last cycle is stored.

use super::results::failed_note;
use crate::embedded_agent::LeaseProgress;
use crate::embedded_run::RunObserver;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lem_agent::meter::ownership::{first_conflict, MeteredDevice};
use lem_agent::runner::RunProgress;
use lem_common::domain::RawResult;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;

/// How one experiment is shown.
#[derive(Debug, Clone)]
pub(super) struct Shown {
    /// Starts every line of the experiment (`[2/4 b.yaml]` under `lem batch --parallel`).
    pub prefix: Option<String>,
    /// Printed when its first cycle is leased (`[2/4] b.yaml`, `[2/4 b.yaml] started …`).
    pub header: Option<String>,
    /// Said when it waits: `[2/4 b.yaml]`.
    pub label: String,
    pub num_cycles: u32,
    /// What it meters, to say why it waits (`lem batch --parallel` only).
    pub metered: Vec<MeteredDevice>,
}

pub(super) struct RunDisplay<'a> {
    pub multi: MultiProgress,
    bars: Vec<ProgressBar>,
    /// `lem batch`'s count of finished experiments, under the runners' bars.
    overall: Option<ProgressBar>,
    shown: Arc<BTreeMap<String, Shown>>,
    started: BTreeSet<String>,
    waits_said: BTreeSet<String>,
    /// Whether to explain waits: with one runner nothing waits for a device.
    explain_waits: bool,
    /// Called when an experiment's last cycle is stored (its summary, its status).
    on_done: &'a mut dyn FnMut(&str, &MultiProgress),
}

impl<'a> RunDisplay<'a> {
    pub fn new(
        shown: BTreeMap<String, Shown>,
        runners: usize,
        on_done: &'a mut dyn FnMut(&str, &MultiProgress),
    ) -> Self {
        let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let bars = (0..runners)
            .map(|_| multi.add(ProgressBar::new(0)))
            .collect();
        Self {
            multi,
            bars,
            overall: None,
            shown: Arc::new(shown),
            started: BTreeSet::new(),
            waits_said: BTreeSet::new(),
            explain_waits: runners > 1,
            on_done,
        }
    }

    /// Adds the batch's bar: `total` experiments, one step as each one's last cycle is
    /// stored.
    pub fn with_overall(mut self, total: usize) -> Self {
        let overall = self.multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("batch [{bar:20}] {pos}/{len} experiments done {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.overall = Some(overall);
        self
    }

    /// The progress display runner `i` drives from its own thread.
    pub fn runner_progress(&self, i: usize) -> Box<dyn LeaseProgress> {
        let bar = self.bars[i].clone();
        bar.set_style(spinner_style());
        Box::new(BarProgress {
            bar,
            shown: self.shown.clone(),
        })
    }

    pub fn say(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    pub fn finish(&self) {
        for bar in self.bars.iter().chain(&self.overall) {
            bar.finish_and_clear();
        }
    }
}

impl RunObserver for RunDisplay<'_> {
    fn leased(&mut self, _runner: usize, experiment: &str, _cycle: u32) {
        if self.started.insert(experiment.to_string()) {
            if let Some(h) = self.shown.get(experiment).and_then(|s| s.header.clone()) {
                self.say(&h);
            }
        }
    }

    fn stored(&mut self, raw: &RawResult) {
        let m = crate::aggregate::job_metrics(raw);
        let energy = match (m.energy.total_j, m.energy.partial_total_j) {
            (Some(j), _) => format!("{j:.2} J"),
            (None, Some(j)) => format!("no energy total ({j:.2} J over the devices read)"),
            (None, None) => "energy unavailable".to_string(),
        };
        let prefix = self
            .shown
            .get(&raw.experiment_id)
            .and_then(|s| s.prefix.as_deref())
            .map_or(String::new(), |l| format!("{l} "));
        self.say(&format!(
            "{prefix}  cycle {}: {} prompts{}, {} output tokens in {:.2} s ({} tok/s), {energy}",
            raw.cycle + 1,
            m.num_requests,
            failed_note(m.failed_requests),
            m.output_tokens,
            m.wall_s,
            m.output_tokens_per_s
                .map_or("—".into(), |r| format!("{r:.1}"))
        ));
    }

    fn experiment_done(&mut self, experiment: &str) {
        if let Some(overall) = &self.overall {
            overall.inc(1);
        }
        (self.on_done)(experiment, &self.multi);
    }

    fn queue(&mut self, running: &BTreeSet<String>, waiting: &BTreeSet<String>) {
        if !self.explain_waits {
            return;
        }
        for w in waiting {
            if self.waits_said.contains(w) || self.started.contains(w) {
                continue;
            }
            let Some(ws) = self.shown.get(w) else {
                continue;
            };
            let blocker = running.iter().find_map(|r| {
                let rs = self.shown.get(r)?;
                first_conflict(&ws.metered, &rs.metered).map(|key| (rs.label.clone(), key))
            });
            if let Some((running_label, key)) = blocker {
                self.waits_said.insert(w.clone());
                self.say(&format!(
                    "{} waits for {running_label} to finish: both meter {key}, and one device's energy cannot be split between experiments running at once",
                    ws.label
                ));
            }
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}{spinner} {msg:12} {elapsed_precise}")
        .expect("valid template")
}

/// One runner's bar: a spinner until the number of prompts is known, then a bar.
struct BarProgress {
    bar: ProgressBar,
    shown: Arc<BTreeMap<String, Shown>>,
}

impl LeaseProgress for BarProgress {
    fn job_started(&mut self, experiment: &str, cycle: u32) {
        let shown = self.shown.get(experiment);
        let prefix = shown
            .and_then(|s| s.prefix.as_deref())
            .map_or(String::new(), |p| format!("{p} "));
        let of = shown.map_or(0, |s| s.num_cycles);
        // Back to a spinner: the previous cycle's full bar must not show during this
        // cycle's model load and idle baseline.
        self.bar.set_prefix(prefix);
        self.bar.set_style(spinner_style());
        self.bar.set_length(0);
        self.bar.set_position(0);
        self.bar.set_message(format!("cycle {}/{of}", cycle + 1));
    }
}

impl RunProgress for BarProgress {
    fn phase(&mut self, message: &str) {
        self.bar.set_message(message.to_string());
        self.bar.tick();
    }
    fn prompts_total(&mut self, n: u64) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{prefix}{spinner} {msg:12} [{bar:30}] {pos}/{len} prompts {elapsed_precise} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar.set_length(n);
        self.bar.set_position(0);
    }
    fn prompts_done(&mut self, n: u64) {
        self.bar.inc(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cycle_starts_its_progress_from_nothing() {
        // Hidden (no terminal), but the bar keeps its state as a visible one would.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let shown = BTreeMap::from([(
            "exp_a".to_string(),
            Shown {
                prefix: Some("[1/2 a.yaml]".into()),
                header: None,
                label: "[1/2 a.yaml]".into(),
                num_cycles: 2,
                metered: Vec::new(),
            },
        )]);
        let mut p = BarProgress {
            bar: bar.clone(),
            shown: Arc::new(shown),
        };
        p.job_started("exp_a", 0);
        p.prompts_total(8);
        p.prompts_done(8);
        assert_eq!((bar.position(), bar.length()), (8, Some(8)));
        // The next cycle's model load and idle baseline must not show the last cycle's 8/8.
        p.job_started("exp_a", 1);
        assert_eq!((bar.position(), bar.length()), (0, Some(0)));
        assert_eq!(bar.message(), "cycle 2/2");
        assert_eq!(bar.prefix(), "[1/2 a.yaml] ");
    }
}
