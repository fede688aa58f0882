//! The report's data from small stored results (no model, no browser): missing energy
//! stays null with its reason, and experiments are compared on the axes that differ.

use super::*;
use crate::aggregate::aggregate_experiment;
use crate::store::{ExperimentRecord, ExperimentStatus};
use crate::test_fixtures::raw_result;

const WALL_NS: u64 = 2_000_000_000;

fn input(id: &str, batch_size: u32, output_tokens: u32) -> ExperimentInput {
    let config = serde_json::json!({ "batching_options": { "batch_size": batch_size } });
    let raws: Vec<_> = (0..2)
        .map(|cycle| {
            let mut r = raw_result(id, cycle, output_tokens, WALL_NS);
            r.effective_config = config.clone();
            r
        })
        .collect();
    let aggregate = aggregate_experiment(id, "cfg", "m", 2, &raws);
    ExperimentInput {
        record: ExperimentRecord {
            id: id.into(),
            config_name: "cfg".into(),
            model_name: "m".into(),
            config_fingerprint: String::new(),
            effective_config: config,
            cli_overrides: Default::default(),
            num_cycles: 2,
            status: ExperimentStatus::Completed,
            created_at: String::new(),
            updated_at: String::new(),
            pid: 0,
            hostname: "test-host".into(),
            error: None,
            error_chain: Vec::new(),
            origin: "test".into(),
            until_ci: None,
        },
        aggregate,
        raws,
    }
}

#[test]
fn energy_that_was_not_read_is_null_with_its_reason_and_one_experiment_has_no_comparison() {
    let data = build(&[input("exp_a_000001", 1, 3)], "2026-12-01T00:00:00Z").unwrap();
    assert!(data.comparison.is_none());
    assert!(data.comparison_absent_reason.is_some());
    let exp = &data.experiments[0];
    // The fixture's only reading: package-0, not read.
    let power = &exp.power[0];
    assert!(power.t_s.is_empty() && power.power_w.is_empty());
    assert!(power
        .unavailable_reason
        .as_deref()
        .unwrap()
        .contains("no RAPL under the test's powercap root"));
    let total = exp
        .cycle_metrics
        .iter()
        .find(|m| m.name == "energy_total_j")
        .unwrap();
    assert_eq!(total.values, vec![None, None]);
    assert!(total.summary.is_none());
    assert!(total
        .unavailable_reason
        .as_deref()
        .unwrap()
        .contains("package-0"));
    assert_eq!(exp.phase_energy[0].prefill_j, vec![None, None]);
    assert_eq!(exp.phase_energy[0].gaps.len(), 2);
    // Two requests per cycle, TTFT 1 ms each (the fixture's), 2 ITL gaps per request.
    assert_eq!(exp.latency.ttft_ms, vec![1.0; 4]);
    assert_eq!(exp.latency.itl_ms.len(), 4 * 2);
    // The provenance says the energy is missing and why; one timing row per cycle.
    assert_eq!(exp.provenance.len(), 2 * 2);
    assert!(exp.provenance[0].energy_j.is_none());
    assert!(exp.provenance[0].unavailable_reason.is_some());
}

#[test]
fn experiments_are_compared_on_the_axis_that_differs_with_missing_energy_left_out() {
    let inputs = [input("exp_a_00000a", 4, 5), input("exp_b_00000b", 1, 3)];
    let data = build(&inputs, "2026-12-01T00:00:00Z").unwrap();
    let cmp = data.comparison.unwrap();
    let batch = cmp.axes.iter().find(|a| a.name == "batch_size").unwrap();
    assert!(batch.numeric);
    assert_eq!(batch.values, vec!["4", "1"]);
    assert_eq!(
        cmp.axes.len(),
        1,
        "only the batch size differs: {:?}",
        cmp.axes
    );
    // Throughput: 2 requests × output tokens over the 2 s window, the same each cycle.
    for (p, tokens) in cmp.points.iter().zip([5.0, 3.0]) {
        let expected = 2.0 * tokens / (WALL_NS as f64 / 1e9);
        let got = p.output_tokens_per_s.mean.unwrap();
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        assert!(p.j_per_output_token.mean.is_none());
        assert!(p.j_per_output_token.unavailable_reason.is_some());
    }
    assert!(cmp.pareto.points.is_empty());
    assert_eq!(cmp.pareto.left_out.len(), 2);
    assert!(cmp.heatmap.is_none());
    assert!(cmp
        .heatmap_absent_reason
        .unwrap()
        .contains("only batch size"));
}

#[test]
fn a_report_needs_an_experiment() {
    assert!(matches!(build(&[], "now"), Err(ReportError::NoExperiments)));
}

#[test]
fn the_page_inlines_the_library_and_the_data() {
    let data = build(&[input("exp_a_000001", 1, 3)], "2026-12-01T00:00:00Z").unwrap();
    let html = render(&data).unwrap();
    assert!(html.contains("https://github.com/leeoniya/uPlot"));
    assert!(!html.contains("<script src") && !html.contains("<link "));
    let start = html.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
    let end = html[start..].find("</script>").unwrap() + start;
    let back: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(back["experiments"][0]["id"], "exp_a_000001");
}
