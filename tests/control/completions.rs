//! Shell completions for each shell and the man page, each naming every
//! subcommand.

use agent_sync_testkit::*;

use crate::sandbox;

#[actix_rt::test]
async fn completions_for_each_shell_and_the_man_page_name_every_subcommand() {
    let sandbox = sandbox();
    for shell in ["bash", "zsh", "fish"] {
        let out = run_async(sandbox.cmd(&["completions", shell])).await.ok();
        assert!(out.stdout.len() > 200, "{shell}: {}", out.stdout);
        for sub in SUBCOMMANDS {
            assert!(out.stdout.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // roff writes a hyphen as `\-`.
    let man = run_async(sandbox.cmd(&["man"]))
        .await
        .ok()
        .stdout
        .replace("\\-", "-");
    assert!(man.contains(".TH agent-sync 1"), "not roff: {man}");
    for sub in SUBCOMMANDS {
        assert!(
            man.contains(&format!("agent-sync-{sub}(1)")),
            "the man page lacks {sub}"
        );
        // ... and each command it names has its page.
        let page = run_async(sandbox.cmd(&["man", sub]))
            .await
            .ok()
            .stdout
            .replace("\\-", "-");
        assert!(
            page.contains(&format!(".TH agent-sync-{sub} 1")),
            "{sub}: {page}"
        );
    }
    assert_eq!(run_async(sandbox.cmd(&["man", "nope"])).await.code, 1);
    // Neither needs (or creates) a state.
    assert!(!sandbox.state().exists());
    assert_eq!(
        run_async(sandbox.cmd(&["completions", "tcsh"])).await.code,
        2
    );
}
