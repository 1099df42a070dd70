//! The demo's loss-continuity check on the full schedule (fast enough at opt-level 1): saved at TP=2, resumed at TP=1 and TP=4.

use uc_burn::demo::{run, DemoOptions};

#[test]
fn resumed_losses_continue_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // The full schedule (200 steps, saved at 100): fast enough at opt-level 1.
    let opts = DemoOptions::default();
    let s = run(dir.path(), &opts).unwrap();
    assert_eq!(s.uninterrupted.len(), 200);
    assert!(
        s.uninterrupted[199].1 < s.uninterrupted[0].1,
        "the loss goes down: {:?}",
        s.uninterrupted
    );
    for tp in [1, 4] {
        assert_eq!(s.resumed[&tp].len(), 100);
        assert!(
            s.max_rel_diff[&tp] <= 1e-5,
            "tp {tp}: {:e}",
            s.max_rel_diff[&tp]
        );
        assert!(s.load[&tp].ratio() <= 1.0 + 1e-9);
    }
    let csv = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    assert!(csv.starts_with("step,run,loss\n"));
    for run in ["uninterrupted_tp2", "resumed_tp1", "resumed_tp4"] {
        assert_eq!(
            csv.lines()
                .filter(|l| l.split(',').nth(1) == Some(run))
                .count(),
            if run.starts_with('u') { 200 } else { 100 }
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("resumed_tp4"));
    // A bad schedule is a typed error.
    assert!(run(
        &dir.path().join("x"),
        &DemoOptions {
            save_at: 300,
            ..opts
        }
    )
    .is_err());
}
