use keel_consensus::sim::{SimConfig, Simulation};
use keel_types::Round;
#[test]
fn dbg() {
    let cfg = SimConfig::random(7, 1692);
    let mut sim = Simulation::new(cfg);
    for t in [1500u64, 3000, 5600, 6000, 8000, 12000] {
        sim.run_until(t);
        println!(
            "VIEW t={t} heights {:?} rounds {:?}",
            sim.heights(),
            sim.rounds()
        );
        for d in sim.describe() {
            println!("VIEW   {}", &d[..d.len().min(260)]);
        }
        let r = sim.rounds().into_iter().max().unwrap();
        let v: Vec<_> = sim
            .leader_views(Round(r))
            .iter()
            .map(|v| v.as_ref().map(|(l, f, _)| (l.0, *f)))
            .collect();
        println!("VIEW   leader views of round {r}: {v:?}");
    }
}
