//! Manifest-directory rules: last good content, writers caught mid-write, renames, limits,
//! mesh config, duplicates, files that become something else.
use super::*;

const MAX: u64 = 1024 * 1024;

fn rev() -> Revision {
    "canary".parse().unwrap()
}

fn source(dir: &Path) -> DirSource {
    DirSource::new(dir, &rev(), MAX)
}

/// Scans with the hint a writer that wrote `path` and closed it leaves, twice (a content
/// written in place is taken on its second equal reading).
fn closed(source: &mut DirSource, path: &Path) -> Scan {
    let hints = Hints::default();
    hints.set(path, WriteHint::Closed);
    source.scan(&hints);
    hints.set(path, WriteHint::Closed);
    source.scan(&hints)
}

fn services(scan: &Scan) -> usize {
    scan.objects
        .iter()
        .filter(|o| matches!(o, Object::Service(_)))
        .count()
}

#[test]
fn the_revisions_own_config_map_is_its_mesh_config() {
    let dir = tempfile::tempdir().unwrap();
    let cm = |name: &str, mesh: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: revplane}}\ndata:\n  mesh: |\n    {mesh}\n")
    };
    let canary = dir.path().join("canary.yaml");
    std::fs::write(&canary, cm("revplane-canary", "lbPolicy: RANDOM")).unwrap();
    std::fs::write(
        dir.path().join("stable.yaml"),
        cm("revplane-stable", "lbPolicy: LEAST_REQUEST"),
    )
    .unwrap();
    let mut source = source(dir.path());
    let scan = source.scan(&Hints::default());
    assert_eq!(scan.objects.len(), 1, "only the canary's own mesh config");
    assert!(
        matches!(&scan.objects[0], Object::Mesh(m) if m.lb_policy == crate::mesh::LbPolicy::Random)
    );
    std::fs::write(&canary, cm("revplane-canary", "lbPolicy: NONE")).unwrap();
    let scan = closed(&mut source, &canary);
    assert!(
        matches!(&scan.objects[0], Object::Mesh(m) if m.lb_policy == crate::mesh::LbPolicy::Random),
        "last good kept"
    );
    assert!(
        scan.errors[0].reason.contains("invalid mesh config"),
        "{}",
        scan.errors[0].reason
    );
}

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n";

/// Two Services and a slice, as a slow writer would leave them after each piece.
const SHOP: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b-1, namespace: shop, labels: {kubernetes.io/service-name: b}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]\n";

#[test]
fn reads_multi_document_files_and_ignores_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/a.yml"), GOOD).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let scan = source(dir.path()).scan(&Hints::default());
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.objects.len(), 1);
}

#[test]
fn a_bad_file_keeps_its_last_good_content_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let mut source = source(dir.path());
    let good = source.scan(&Hints::default());
    assert_eq!(good.objects.len(), 1);

    std::fs::write(&file, GOOD.replace("port: 80", "port: 0")).unwrap();
    let scan = closed(&mut source, &file);
    assert_eq!(scan.objects, good.objects, "last good content is kept");
    assert_eq!(scan.errors.len(), 1);
    assert_eq!(scan.errors[0].document, Some(0));
    assert!(scan.errors[0].path.ends_with("shop.yaml"));
    assert!(
        scan.errors[0].reason.contains("outside 1-65535"),
        "{}",
        scan.errors[0].reason
    );

    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: [").unwrap();
    let scan = closed(&mut source, &file);
    assert_eq!(scan.objects, good.objects);
    assert!(scan.errors[0].reason.contains("not valid YAML"));

    std::fs::write(&file, GOOD).unwrap();
    assert!(closed(&mut source, &file).errors.is_empty());
}

#[test]
fn a_deep_or_huge_file_is_refused_at_once_and_its_last_good_content_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let mut source = source(dir.path());
    let good = source.scan(&Hints::default());
    // 100,000 levels in 400 KB: serde_yaml_ng alone spends minutes on it.
    let bomb = format!("{}{}", "{a: ".repeat(100_000), "}".repeat(100_000));
    std::fs::write(&file, &bomb).unwrap();
    let started = Instant::now();
    let scan = closed(&mut source, &file);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(scan.objects, good.objects);
    assert!(scan.errors[0].path.ends_with("shop.yaml"));
    assert!(
        scan.errors[0].reason.contains("nested more than 128"),
        "{}",
        scan.errors[0].reason
    );
    assert_eq!(
        source.parses, 2,
        "each content parsed once, not per reading"
    );

    let mut small = DirSource::new(dir.path(), &rev(), 1000);
    std::fs::write(&file, GOOD).unwrap();
    small.scan(&Hints::default());
    std::fs::write(&file, " ".repeat(1001) + GOOD).unwrap();
    let scan = closed(&mut small, &file);
    assert_eq!(services(&scan), 1);
    assert!(
        scan.errors[0]
            .reason
            .contains("more than --max-manifest-bytes (1000)"),
        "{}",
        scan.errors[0].reason
    );
}

#[test]
fn a_file_rewritten_in_place_never_shrinks_while_its_writer_is_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, SHOP).unwrap();
    let mut source = source(dir.path());
    let hints = Hints::default();
    let full = source.scan(&hints);
    assert_eq!(services(&full), 2);
    // `kubectl get ... > shop.yaml`: truncated, then written piece by piece, file open.
    for cut in [0, 60, 150, 250, SHOP.len() - 20] {
        std::fs::write(&file, &SHOP[..cut]).unwrap();
        hints.set(&file, WriteHint::Writing);
        for _ in 0..2 {
            let scan = source.scan(&hints);
            assert_eq!(scan.objects, full.objects, "cut at {cut}");
            assert_eq!(scan.pending, 1);
            assert!(scan.recheck.is_some());
        }
    }
    // A writer that closes after every piece (`>>` per piece): pieces drop objects, which
    // needs the file to hold still longer than the pauses between pieces.
    for cut in [0, 150, 250] {
        std::fs::write(&file, &SHOP[..cut]).unwrap();
        assert_eq!(
            closed(&mut source, &file).objects,
            full.objects,
            "cut at {cut}"
        );
    }
    std::fs::write(&file, SHOP).unwrap();
    let scan = closed(&mut source, &file);
    assert_eq!((scan.objects, scan.pending), (full.objects, 0));
}

#[test]
fn a_new_file_appears_whole_and_a_rename_is_taken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = source(dir.path());
    let hints = Hints::default();
    assert!(source.scan(&hints).objects.is_empty());
    let file = dir.path().join("shop.yaml");
    for cut in [100, 250] {
        std::fs::write(&file, &SHOP[..cut]).unwrap();
        hints.set(&file, WriteHint::Writing);
        assert!(source.scan(&hints).objects.is_empty(), "cut at {cut}");
    }
    std::fs::write(&file, SHOP).unwrap();
    assert_eq!(
        services(&closed(&mut source, &file)),
        2,
        "whole once closed"
    );

    // Renamed over it (an editor's save, `mv`, rsync): no wait, even when it drops objects.
    let tmp = dir.path().join(".shop.yaml.tmp");
    std::fs::write(&tmp, GOOD).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let scan = source.scan(&Hints::default());
    assert_eq!(
        (services(&scan), scan.pending),
        (1, 0),
        "another inode: taken"
    );
    std::fs::write(&tmp, SHOP).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    hints.set(&file, WriteHint::MovedIn);
    assert_eq!(services(&source.scan(&hints)), 2);
    assert_eq!(hints.get(&file), None, "the evidence is used up");
}

#[test]
fn without_evidence_a_change_waits_for_the_slow_write_hold() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, SHOP).unwrap();
    let mut source = source(dir.path());
    let none = Hints::default();
    source.scan(&none);
    std::fs::write(&file, GOOD).unwrap(); // same inode, no events seen
    let scan = source.scan(&none);
    assert_eq!(services(&scan), 2);
    assert!(scan.recheck.unwrap() > SLOW_WRITE_HOLD - Duration::from_millis(200));
    std::thread::sleep(SLOW_WRITE_HOLD);
    assert_eq!(services(&source.scan(&none)), 1);
}

#[test]
fn a_file_replaced_by_a_directory_keeps_its_content_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, GOOD).unwrap();
    std::fs::create_dir(dir.path().join("just-a.yaml")).unwrap();
    let mut source = source(dir.path());
    let good = source.scan(&Hints::default());
    assert!(
        good.errors.is_empty(),
        "a directory never a file is just a directory"
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    for _ in 0..2 {
        let scan = source.scan(&Hints::default());
        assert_eq!(scan.objects, good.objects);
        assert_eq!(scan.errors.len(), 1);
        assert!(
            scan.errors[0].reason.contains("is now a directory"),
            "{}",
            scan.errors[0].reason
        );
    }
    std::fs::remove_dir(&file).unwrap();
    source.scan(&Hints::default());
    std::thread::sleep(SETTLE);
    let scan = source.scan(&Hints::default());
    assert!(
        scan.objects.is_empty() && scan.errors.is_empty(),
        "{scan:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_pipe_named_like_a_manifest_is_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    let scan = source(dir.path()).scan(&Hints::default());
    assert!(
        scan.errors[0].reason.contains("not a regular file"),
        "{scan:?}"
    );
}

#[test]
fn an_unreadable_root_is_incomplete_and_a_symlinked_dir_is_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing = source(&dir.path().join("nope"));
    assert!(!missing.scan(&Hints::default()).complete);
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let scan = source(dir.path()).scan(&Hints::default());
    assert!(scan.complete);
    assert_eq!(scan.objects.len(), 1, "the loop is not followed");
}

#[test]
fn an_object_defined_twice_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
    let scan = source(dir.path()).scan(&Hints::default());
    assert_eq!(scan.errors.len(), 1);
    assert!(scan.errors[0].path.ends_with("b.yaml"));
    assert!(
        scan.errors[0]
            .reason
            .contains("Service shop/web is also defined in"),
        "{}",
        scan.errors[0].reason
    );
}

#[test]
fn a_file_never_good_contributes_nothing_and_deleted_files_go_on_the_second_look() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: Service\n").unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let mut source = source(dir.path());
    let scan = source.scan(&Hints::default());
    assert_eq!(scan.objects.len(), 1);
    assert!(scan.errors[0].reason.contains("apiVersion and kind"));
    std::fs::remove_file(dir.path().join("good.yaml")).unwrap();
    let scan = source.scan(&Hints::default());
    assert_eq!((scan.objects.len(), scan.recheck), (1, Some(SETTLE)));
    std::thread::sleep(SETTLE);
    assert!(source.scan(&Hints::default()).objects.is_empty());
}

#[cfg(unix)]
#[test]
fn a_config_map_volume_update_is_taken_at_once() {
    // The kubelet's layout: shop.yaml -> ..data/shop.yaml, ..data -> ..<timestamp>; an
    // update writes a new timestamped directory and renames a new ..data over the old.
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("shop.yaml"), text).unwrap();
        symlink(name, dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    };
    version("..v1", SHOP);
    symlink("..data/shop.yaml", dir.path().join("shop.yaml")).unwrap();
    let mut source = source(dir.path());
    assert_eq!(services(&source.scan(&Hints::default())), 2);
    version("..v2", GOOD);
    let scan = source.scan(&Hints::default());
    assert_eq!((services(&scan), scan.pending), (1, 0));
}

#[test]
fn a_file_removed_between_listing_and_reading_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.yaml");
    let mut source = source(dir.path());
    // What a scan does with a path it listed that is gone when it reads it.
    let again = source.look_at(&path, None, false, Instant::now(), &Hints::default());
    assert_eq!(again, Some(SETTLE), "looked at again soon");
    let scan = source.scan(&Hints::default());
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
}
