//! The paths cli and the example use, pinned so that moving an item inside servers/ cannot
//! break them unnoticed (cli is not built by `cargo test -p servers`).

use clap::Parser;

#[derive(Parser)]
enum Cmd {
    Serve(servers::serve::ServeArgs),
    Load(servers::load::LoadArgs),
}

#[test]
fn the_paths_cli_uses_still_exist() {
    let _: fn(servers::serve::ServeArgs) -> anyhow::Result<()> = servers::serve::run;
    let _: fn(servers::load::LoadArgs) -> anyhow::Result<()> = servers::load::run;
    let _: servers::load::TcpSegments = servers::load::TcpSegments::default();
    assert_eq!(servers::serve::Io::default(), servers::Io::Cached);
    assert_eq!(servers::serve::Model::default(), servers::Model::Epoll);
    let Cmd::Serve(a) = Cmd::parse_from(["x", "serve", "--root", "/"]) else {
        panic!("serve parses")
    };
    assert_eq!(
        (a.io, a.model),
        (servers::Io::Cached, servers::Model::Epoll)
    );
    let Cmd::Load(a) = Cmd::parse_from(["x", "load", "http://127.0.0.1:1/"]) else {
        panic!("load parses")
    };
    assert_eq!(a.urls, ["http://127.0.0.1:1/"]);
}
