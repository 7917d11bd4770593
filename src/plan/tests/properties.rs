//! Properties over random releases (recreate, blue-green and rolling behind a proxy), checked
//! with the simulator in `super`: plans are ordered, converge, and a failure or a crash at any
//! step ends fully old or fully new.

use super::*;

#[derive(Debug, Clone)]
struct RandomService {
    image: u8,
    env: u8,
    /// Bit i: depends on service i (only earlier services, so the graph is acyclic).
    deps: u8,
    network: u8,
    /// 0: recreate, 1: blue-green, 2: rolling.
    strategy: u8,
    /// Rolling: 1..=3.
    replicas: u8,
}

impl RandomService {
    fn routed(&self) -> bool {
        self.strategy != 0
    }
}

fn random_spec(services: &[RandomService]) -> String {
    let mut y = String::from("version: 1\nrelease: prop\nnetworks: { n0: {}, n1: {}, n2: {} }\n");
    let routed: Vec<String> = services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.routed())
        .map(|(i, _)| format!("r{i}: {{ service: s{i}, port: 80 }}"))
        .collect();
    if !routed.is_empty() {
        y.push_str(&format!(
            "proxy: {{ image: 'nginx:1', config: nginx.conf, ports: ['127.0.0.1:8080:80'], networks: [n0, n1, n2], routes: {{ {} }} }}\n",
            routed.join(", ")
        ));
    }
    y.push_str("services:\n");
    for (i, s) in services.iter().enumerate() {
        let deps: Vec<String> = (0..i)
            .filter(|j| s.deps & (1 << j) != 0)
            .map(|j| format!("s{j}"))
            .collect();
        y.push_str(&format!(
            "  s{i}:\n    image: img{}:1\n    environment: {{ V: \"{}\" }}\n    networks: [n{}]\n    depends_on: [{}]\n    strategy: {}\n{}{}",
            s.image % 3,
            s.env % 3,
            s.network % 3,
            deps.join(", "),
            ["recreate", "blue-green", "rolling"][usize::from(s.strategy)],
            if s.routed() { "    verify: { path: /v }\n" } else { "" },
            if s.strategy == 2 {
                format!("    deploy: {{ replicas: {} }}\n", s.replicas)
            } else {
                String::new()
            },
        ));
    }
    y
}

fn services_strategy() -> impl Strategy<Value = Vec<RandomService>> {
    prop::collection::vec(
        (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            0..3u8,
            1..4u8,
        )
            .prop_map(
                |(image, env, deps, network, strategy, replicas)| RandomService {
                    image,
                    env,
                    deps,
                    network,
                    strategy,
                    replicas,
                },
            ),
        1..6,
    )
}

#[derive(Debug, Clone)]
enum Drift {
    Remove(usize),
    Stop(usize),
    Unhealthy(usize),
    ImageGone(usize),
}

fn drift_strategy() -> impl Strategy<Value = Vec<Drift>> {
    prop::collection::vec(
        prop_oneof![
            (0..6usize).prop_map(Drift::Remove),
            (0..6usize).prop_map(Drift::Stop),
            (0..6usize).prop_map(Drift::Unhealthy),
            (0..6usize).prop_map(Drift::ImageGone),
        ],
        0..4,
    )
}

/// A host that ran the release `before` and then drifted, and the release `after` to plan.
fn random_case(
    before: &[RandomService],
    after: &[RandomService],
    drift: Vec<Drift>,
) -> (DesiredRelease, LiveState) {
    let d1 = desired(&random_spec(before));
    let empty = live_with_images(&d1);
    let mut live = simulate(&empty, &plan(&d1, &empty).unwrap());
    for dr in drift {
        let n = live.containers.len();
        if n == 0 {
            break;
        }
        match dr {
            Drift::Remove(i) => {
                let gone = live.containers.remove(i % n).name;
                sim_move_files(&mut live, &gone, "");
            }
            Drift::Stop(i) => live.containers[i % n].state = ContainerState::Exited,
            Drift::Unhealthy(i) => live.containers[i % n].health = Health::Unhealthy,
            Drift::ImageGone(i) => {
                let image = live.containers[i % n].image.clone();
                live.images.insert(image, None);
            }
        }
    }
    let d2 = desired(&random_spec(after));
    for image in d2.images() {
        live.images.entry(image).or_insert(None);
    }
    (d2, live)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From any earlier release plus any drift, the plan is well ordered and converges: after a
    /// perfect engine ran it, planning again gives nothing to do.
    #[test]
    fn plans_are_ordered_and_converge(
        before in services_strategy(),
        after in services_strategy(),
        drift in drift_strategy(),
    ) {
        let (d2, live) = random_case(&before, &after, drift);
        let p = plan(&d2, &live).unwrap();

        let index = |pred: &dyn Fn(&Action) -> bool| -> Vec<usize> {
            p.steps.iter().enumerate().filter(|(_, s)| pred(&s.action)).map(|(i, _)| i).collect()
        };
        let pulls = index(&|a| matches!(a, Action::PullImage { .. }));
        let others = index(&|a| !matches!(a, Action::PullImage { .. }));
        prop_assert!(pulls.iter().all(|p| others.iter().all(|o| p < o)), "pulls first");
        let gates = index(&|a| matches!(a, Action::AwaitHealthy { .. }));
        let removals = index(&|a| matches!(a, Action::RemoveContainer { .. } | Action::RemoveNetwork { .. }));
        prop_assert!(removals.iter().all(|r| gates.iter().all(|g| g < r)), "removals after every gate");
        for s in &d2.services {
            for dep in &s.dependencies {
                let gate_of_dep = p.steps.iter().position(|st| matches!(&st.action, Action::AwaitHealthy { service, .. } if service == dep));
                let create = p.steps.iter().position(|st| matches!(&st.action, Action::CreateContainer { service, .. } if *service == s.name));
                if let (Some(g), Some(c)) = (gate_of_dep, create) {
                    prop_assert!(g < c, "{} created before {} passed its gate", s.name, dep);
                }
            }
        }
        // Every service with steps has exactly one change entry, and only those do.
        let mut touched: BTreeMap<String, usize> = BTreeMap::new();
        for c in p.changes.iter().filter(|c| matches!(c.kind, ObjectKind::Service | ObjectKind::Proxy)) {
            *touched.entry(c.name.clone()).or_default() += 1;
        }
        prop_assert!(touched.values().all(|n| *n == 1));
        for st in &p.steps {
            if let Some(svc) = st.action.service() {
                prop_assert!(touched.contains_key(svc), "step for {} without a change", svc);
            }
        }

        // With a proxy in the release, nothing is stopped while the proxy sends it traffic.
        let mut host = live.clone();
        for st in &p.steps {
            if let (Some(_), Action::StopContainer { name, .. }) = (&d2.proxy, &st.action) {
                prop_assert!(!sim_serving(&host).contains(name), "stopped {} while it serves", name);
            }
            sim_step(&mut host, &st.action);
        }

        let converged = simulate(&live, &p);
        let again = plan(&d2, &converged).unwrap();
        prop_assert!(again.in_sync(), "not converged: {}", render_text(&again));
        prop_assert_eq!(p.in_sync(), p.changes.is_empty());
    }
}

#[test]
fn json_output_matches_its_published_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schemas/plan.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let d1 = desired(SHOP);
    let live = simulate(
        &live_with_images(&d1),
        &plan(&d1, &live_with_images(&d1)).unwrap(),
    );
    let d2 = desired(&SHOP.replace("shop-api:1.4.1", "shop-api:1.4.2"));
    for (d, l) in [(&d1, &live_with_images(&d1)), (&d1, &live), (&d2, &live)] {
        let j = render_json(&plan(d, l).unwrap());
        let errors: Vec<String> = validator.iter_errors(&j).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{j:#}");
    }
}

/// The release-relevant part of a host: images pulled by a failed release stay (harmless), so
/// they are left out; a file the proxy never had and one recorded as missing are the same.
pub(super) fn host_state(
    live: &LiveState,
) -> (
    Vec<LiveContainer>,
    Vec<LiveNetwork>,
    Vec<LiveVolume>,
    BTreeMap<String, String>,
) {
    let mut containers = live.containers.clone();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut networks = live.networks.clone();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut volumes = live.volumes.clone();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let files = live
        .proxy_files
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    (containers, networks, volumes, files)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The executor's state machine: a failure injected at any step before the commit point
    /// is undone by the real `apply::inverse` steps, in reverse, and the host is exactly the old
    /// release again; with no failure it is exactly the new one. Never a mix.
    #[test]
    fn a_release_ends_fully_new_or_fully_old(
        before in services_strategy(),
        after in services_strategy(),
        drift in drift_strategy(),
        fail_at in any::<usize>(),
    ) {
        let (d2, live) = random_case(&before, &after, drift);
        let p = plan(&d2, &live).unwrap();
        let commit = p
            .steps
            .iter()
            .position(|s| matches!(s.action, Action::RemoveContainer { .. } | Action::RemoveNetwork { .. }))
            .unwrap_or(p.steps.len());
        prop_assume!(commit > 0);
        let failing = fail_at % commit;

        let mut host = live.clone();
        let mut undo = Vec::new();
        for step in &p.steps[..failing] {
            let effect = sim_step(&mut host, &step.action);
            undo.extend(inverse(&step.action, effect));
        }
        // Step `failing` fails without effect; the executor unwinds.
        for u in undo.iter().rev() {
            if let Undo::StopContainer(name) = u {
                prop_assert!(!sim_serving(&host).contains(name), "undo stopped {} while it serves", name);
            }
            sim_undo(&mut host, u);
        }
        prop_assert_eq!(host_state(&host), host_state(&live), "failure at step {} ({})", failing, p.steps[failing].action.kind());

        let done = simulate(&live, &p);
        prop_assert!(plan(&d2, &done).unwrap().in_sync());
    }

    /// Crash recovery's state machine: the process dies at any step, which may or may not have
    /// taken effect, with the journal as apply writes it; `recovery::resolution` and the real
    /// undo mapping then leave the host exactly as before the release (before the commit
    /// point) or exactly as after it (past it). Never a mix.
    #[test]
    fn a_crash_at_any_step_is_recovered_to_fully_old_or_fully_new(
        before in services_strategy(),
        after in services_strategy(),
        drift in drift_strategy(),
        crash_at in any::<usize>(),
        happened in any::<bool>(),
    ) {
        use crate::recovery::{resolution, Resolution};
        use crate::state::journal::JournalFile;

        let (d2, live) = random_case(&before, &after, drift);
        let p = plan(&d2, &live).unwrap();
        prop_assume!(!p.steps.is_empty());
        let k = crash_at % p.steps.len();
        let mut journal = JournalFile::for_plan(&p, commit_point(&p));
        let mut host = live.clone();
        for (i, step) in p.steps[..=k].iter().enumerate() {
            // As apply: a switch records the files it replaces before it starts.
            let previous: Option<Vec<PreviousFile>> = match &step.action {
                Action::ConfigureProxy { files, .. } => Some(
                    files
                        .iter()
                        .map(|f| PreviousFile {
                            path: f.path.clone(),
                            content: host.proxy_files.get(&f.path).cloned().flatten().map(String::into_bytes),
                        })
                        .collect(),
                ),
                _ => None,
            };
            journal.steps[i].mark_started(previous.as_deref());
            if i < k || happened {
                let effect = sim_step(&mut host, &step.action);
                if i < k {
                    journal.steps[i].mark_done(&effect);
                }
            }
        }
        let what = format!("crash at step {k} ({}), happened: {happened}", p.steps[k].action.kind());
        match resolution(&journal) {
            Resolution::Undo { stack, errors } => {
                prop_assert!(errors.is_empty(), "{}: {:?}", what, errors);
                for u in stack.iter().rev() {
                    sim_undo_after_crash(&mut host, u);
                }
                // A volume the step in flight may have created is kept: it may hold data.
                if let Action::CreateVolume { name, .. } = &p.steps[k].action {
                    host.volumes.retain(|v| &v.name != name);
                }
                prop_assert_eq!(host_state(&host), host_state(&live), "{}", what);
            }
            Resolution::Finish(steps) => {
                for s in steps {
                    sim_finish(&mut host, &s.step);
                }
                prop_assert_eq!(host_state(&host), host_state(&simulate(&live, &p)), "{}", what);
            }
            Resolution::NothingStarted => prop_assert!(false, "{}: a step had started", what),
        }
    }
}
