//! Manifest-directory rules: last good content, mid-write files, mesh config, duplicates.
use super::*;

/// Scans until every change has settled (a changed file counts on its second reading).
fn settled(source: &mut DirSource) -> Scan {
    loop {
        let scan = source.scan();
        if !scan.unsettled {
            return scan;
        }
    }
}

fn rev() -> Revision {
    "canary".parse().unwrap()
}

#[test]
fn the_revisions_own_config_map_is_its_mesh_config() {
    let dir = tempfile::tempdir().unwrap();
    let cm = |name: &str, mesh: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: revplane}}\ndata:\n  mesh: |\n    {mesh}\n")
    };
    std::fs::write(
        dir.path().join("canary.yaml"),
        cm("revplane-canary", "lbPolicy: RANDOM"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("stable.yaml"),
        cm("revplane-stable", "lbPolicy: LEAST_REQUEST"),
    )
    .unwrap();
    let mut source = DirSource::new(dir.path(), &rev());
    let scan = source.scan();
    assert_eq!(scan.objects.len(), 1, "only the canary's own mesh config");
    assert!(
        matches!(&scan.objects[0], Object::Mesh(m) if m.lb_policy == crate::mesh::LbPolicy::Random)
    );
    std::fs::write(
        dir.path().join("canary.yaml"),
        cm("revplane-canary", "lbPolicy: NONE"),
    )
    .unwrap();
    let scan = settled(&mut source);
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

#[test]
fn reads_multi_document_files_and_ignores_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/a.yml"), GOOD).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let scan = DirSource::new(dir.path(), &rev()).scan();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.objects.len(), 1);
}

#[test]
fn a_bad_file_keeps_its_last_good_content_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let mut source = DirSource::new(dir.path(), &rev());
    let good = source.scan();
    assert_eq!(good.objects.len(), 1);

    let bad_port = GOOD.replace("port: 80", "port: 0");
    std::fs::write(&file, &bad_port).unwrap();
    let scan = settled(&mut source);
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
    let scan = settled(&mut source);
    assert_eq!(scan.objects, good.objects);
    assert!(scan.errors[0].reason.contains("not valid YAML"));

    std::fs::write(&file, GOOD).unwrap();
    assert!(settled(&mut source).errors.is_empty());
}

#[test]
fn a_file_caught_mid_write_is_not_taken_until_it_holds_still() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let mut source = DirSource::new(dir.path(), &rev());
    let good = source.scan();
    // `kubectl get ... > shop.yaml` truncates first and writes later.
    std::fs::write(&file, "").unwrap();
    for _ in 0..3 {
        let scan = source.scan();
        assert!(scan.unsettled);
        assert_eq!(
            scan.objects, good.objects,
            "an emptied file is not taken at once"
        );
    }
    std::fs::write(&file, GOOD.replace("port: 80", "port: 81")).unwrap();
    assert!(
        source.scan().unsettled,
        "a new content is taken on its second reading"
    );
    let scan = source.scan();
    assert!(!scan.unsettled);
    assert_ne!(scan.objects, good.objects);
    // Emptied for real: taken after it held still for a second.
    std::fs::write(&file, "").unwrap();
    source.scan();
    std::thread::sleep(EMPTIED_HOLD);
    assert!(settled(&mut source).objects.is_empty());
}

#[test]
fn an_unreadable_root_is_incomplete_and_a_symlinked_dir_is_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing = DirSource::new(dir.path().join("nope"), &rev());
    assert!(!missing.scan().complete);
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let scan = DirSource::new(dir.path(), &rev()).scan();
    assert!(scan.complete);
    assert_eq!(scan.objects.len(), 1, "the loop is not followed");
}

#[test]
fn an_object_defined_twice_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
    let scan = DirSource::new(dir.path(), &rev()).scan();
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
fn a_file_never_good_contributes_nothing_and_deleted_files_go() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: Service\n").unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let mut source = DirSource::new(dir.path(), &rev());
    let scan = source.scan();
    assert_eq!(scan.objects.len(), 1);
    assert!(scan.errors[0].reason.contains("apiVersion and kind"));
    std::fs::remove_file(dir.path().join("good.yaml")).unwrap();
    assert!(settled(&mut source).objects.is_empty());
}
