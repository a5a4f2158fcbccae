//! A repository written by someone else (with the key) must not make restore write
//! outside its target: names like `..`, `/` inside names, and a symlink followed by an
//! entry of the same name beneath it are refused.

use std::fs;
use std::sync::Arc;

use cairn::backend::LocalBackend;
use cairn::repo::pack::BlobType;
use cairn::repo::snapshot::{Snapshot, SNAPSHOT_VERSION};
use cairn::repo::tree::{Node, NodeKind, Tree};
use cairn::Repository;

use crate::common::*;

fn file(name: &[u8], repo: &mut Repository, content: &[u8]) -> Node {
    let ids = repo
        .save_blobs(&[(BlobType::Data, content.to_vec())])
        .unwrap();
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.size = content.len() as u64;
    n.content = ids;
    n
}

/// Stores `nodes` as a tree exactly in the given order (no sorting, no checks) and
/// writes a snapshot whose root is that tree.
fn hostile_snapshot(env: &Env, build: impl FnOnce(&mut Repository) -> Vec<Node>) {
    let backend = Arc::new(LocalBackend::new(env.repo.clone()));
    let mut repo = Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    repo.load_index().unwrap();
    let nodes = build(&mut repo);
    // Encode by hand so the hostile order survives (Tree::encode would sort).
    let mut bytes = vec![cairn::repo::tree::TREE_VERSION];
    bytes.extend(bincode_encode(&Tree { nodes }));
    let tree = repo.save_blobs(&[(BlobType::Tree, bytes)]).unwrap()[0];
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        time: chrono::Local::now().fixed_offset(),
        tree,
        paths: vec!["/".into()],
        hostname: "evil".into(),
        username: "evil".into(),
        uid: 0,
        gid: 0,
        tags: vec![],
        parent: None,
        program_version: "hostile".into(),
        summary: None,
        original: None,
    };
    repo.save_snapshot(&snap).unwrap();
}

fn bincode_encode(t: &Tree) -> Vec<u8> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .serialize(t)
        .unwrap()
}

#[test]
fn dot_dot_and_slash_names_are_refused() {
    let env = Env::new();
    env.init();
    hostile_snapshot(&env, |repo| {
        let mut nodes = vec![
            file(b"../escaped", repo, b"evil"),
            file(b"a/../../escaped2", repo, b"evil"),
            file(b"..", repo, b"evil"),
            file(b".", repo, b"evil"),
            file(b"", repo, b"evil"),
            file(b"/abs", repo, b"evil"),
        ];
        nodes.push(file(b"fine", repo, b"good"));
        // Sorted and unique, so the tree decodes and only the names are hostile.
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    });
    let outer = env.path("outer");
    let target = outer.join("target");
    fs::create_dir_all(&target).unwrap();
    let out = env.run(["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(stderr(&out).contains("refusing entry"), "{}", stderr(&out));
    // Only the good file was written; nothing landed beside or above the target.
    assert_eq!(fs::read(target.join("fine")).unwrap(), b"good");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&outer).unwrap().count(), 1);
    assert!(!env.dir.path().join("escaped").exists());
    assert!(!std::path::Path::new("/abs").exists());
}

#[test]
fn symlink_then_directory_of_the_same_name_is_refused() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().as_bytes().to_vec();
    hostile_snapshot(&env, |repo| {
        let mut link = Node::new(b"evil".to_vec(), NodeKind::Symlink);
        link.link_target = outside_str;
        let pwned = file(b"pwned", repo, b"evil");
        let mut inner = Tree { nodes: vec![pwned] };
        let inner_bytes = inner.encode();
        let inner_id = repo.save_blobs(&[(BlobType::Tree, inner_bytes)]).unwrap()[0];
        let mut dir = Node::new(b"evil".to_vec(), NodeKind::Dir);
        dir.mode = 0o755;
        dir.subtree = Some(inner_id);
        vec![link, dir]
    });
    let target = env.path("target");
    let out = env.run(["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not sorted and unique"),
        "{}",
        stderr(&out)
    );
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through the symlink"
    );
}

#[test]
fn symlinks_are_restored_as_links_and_never_followed() {
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().as_bytes().to_vec();
    hostile_snapshot(&env, |repo| {
        // Sorted order: "a-link" (to outside), then "a-link2" (to /), then a file.
        let mut to_outside = Node::new(b"a-link".to_vec(), NodeKind::Symlink);
        to_outside.link_target = outside_str;
        let mut to_root = Node::new(b"a-link2".to_vec(), NodeKind::Symlink);
        to_root.link_target = b"/".to_vec();
        vec![to_outside, to_root, file(b"b-file", repo, b"content")]
    });
    let target = env.path("target");
    // Twice: the second run meets the links already in the target.
    for _ in 0..2 {
        env.restore("latest", &target, &["--overwrite", "always"]);
        assert_eq!(fs::read_link(target.join("a-link")).unwrap(), outside);
        assert_eq!(
            fs::read_link(target.join("a-link2")).unwrap(),
            std::path::Path::new("/")
        );
        assert_eq!(fs::read(target.join("b-file")).unwrap(), b"content");
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
    }
}

/// Members of a hard-link group whose content differs (a hostile or damaged tree) are
/// not linked: each file gets its own content. The old restorer linked the second name
/// to the first file, so it read the first file's bytes.
#[test]
fn hard_link_members_with_different_content_are_not_linked() {
    let env = Env::new();
    env.init();
    hostile_snapshot(&env, |repo| {
        let mut a = file(b"a", repo, b"first file");
        let mut b = file(b"b", repo, b"second, other content");
        for n in [&mut a, &mut b] {
            (n.device, n.inode, n.links) = (1, 7, 2);
        }
        vec![a, b]
    });
    let target = env.path("target");
    env.restore("latest", &target, &[]);
    assert_eq!(fs::read(target.join("a")).unwrap(), b"first file");
    assert_eq!(
        fs::read(target.join("b")).unwrap(),
        b"second, other content"
    );
}
