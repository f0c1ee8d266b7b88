//! Property: for any interleaving of local, send and receive events between simulated nodes,
//! happened-before (computed exactly with vector clocks) implies Lamport and HLC stamp order.

use std::sync::Arc;
use std::time::Duration;

use posa::clock::{Clock, HlcTimestamp, HybridClock, LamportClock, LamportTime, ManualClock};
use proptest::prelude::*;

const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Local(usize),
    Send {
        from: usize,
        to: usize,
    },
    Deliver(usize),
    /// Move a node's wall clock by this many ms (negative: an NTP step back).
    Wall {
        node: usize,
        delta_ms: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..NODES).prop_map(Step::Local),
        (0..NODES, 0..NODES).prop_map(|(from, to)| Step::Send { from, to }),
        (0..16usize).prop_map(Step::Deliver),
        (0..NODES, -50i64..50).prop_map(|(node, delta_ms)| Step::Wall { node, delta_ms }),
    ]
}

struct Event {
    vc: [u32; NODES],
    lamport: LamportTime,
    hlc: HlcTimestamp,
    /// the node's wall clock when the event was stamped, in ms
    wall_ms: u64,
}

struct Node {
    vc: [u32; NODES],
    lamport: LamportClock,
    wall: Arc<ManualClock>,
    hlc: HybridClock<Arc<ManualClock>>,
}

fn happened_before(a: &[u32; NODES], b: &[u32; NODES]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a != b
}

proptest! {
    #[test]
    fn happened_before_implies_stamp_order(steps in prop::collection::vec(step(), 1..80)) {
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                // skewed but within the drift bound of one another
                let wall = Arc::new(ManualClock::with_wall(Duration::from_millis(1_000_000 + 10 * i as u64)));
                Node {
                    vc: [0; NODES],
                    lamport: LamportClock::new(),
                    hlc: HybridClock::with_clock(Arc::clone(&wall), Duration::from_secs(3600)),
                    wall,
                }
            })
            .collect();
        let mut in_flight: Vec<(usize, [u32; NODES], LamportTime, HlcTimestamp)> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        for s in steps {
            match s {
                Step::Local(n) | Step::Send { from: n, .. } => {
                    let node = &mut nodes[n];
                    node.vc[n] += 1;
                    let ev = Event {
                        vc: node.vc,
                        lamport: node.lamport.tick(),
                        hlc: node.hlc.now(),
                        wall_ms: node.wall.unix_time().as_millis() as u64,
                    };
                    if let Step::Send { to, .. } = s {
                        in_flight.push((to, ev.vc, ev.lamport, ev.hlc));
                    }
                    events.push(ev);
                }
                Step::Deliver(i) if !in_flight.is_empty() => {
                    let (to, vc, l, h) = in_flight.remove(i % in_flight.len());
                    let node = &mut nodes[to];
                    for (mine, theirs) in node.vc.iter_mut().zip(vc) {
                        *mine = (*mine).max(theirs);
                    }
                    node.vc[to] += 1;
                    let lamport = node.lamport.receive(l).unwrap();
                    let hlc = node.hlc.receive(h).unwrap();
                    let wall_ms = node.wall.unix_time().as_millis() as u64;
                    events.push(Event { vc: node.vc, lamport, hlc, wall_ms });
                }
                Step::Deliver(_) => {}
                Step::Wall { node, delta_ms } => {
                    let d = Duration::from_millis(delta_ms.unsigned_abs());
                    if delta_ms >= 0 {
                        nodes[node].wall.step_wall_forward(d);
                    } else {
                        nodes[node].wall.step_wall_back(d);
                    }
                }
            }
        }
        for a in &events {
            for b in &events {
                if happened_before(&a.vc, &b.vc) {
                    prop_assert!(a.lamport < b.lamport, "Lamport {:?} !< {:?}", a.lamport, b.lamport);
                    prop_assert!(a.hlc < b.hlc, "HLC {} !< {}", a.hlc, b.hlc);
                }
            }
        }
        for e in &events {
            prop_assert!(e.hlc.physical_ms() >= e.wall_ms, "HLC {} behind its wall clock {}", e.hlc, e.wall_ms);
        }
    }
}
