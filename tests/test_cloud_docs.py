"""Every gcloud command the pages show, as written: its command group and flags exist in the gcloud installed,
and `gcloud <command> --help` parses."""
import concurrent.futures
import glob
import importlib.util
import os
import re
import shlex
import subprocess

from helpers import ROOT, gcloud_env, needs_gcloud

PAGES = ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + sorted(
    glob.glob(os.path.join(ROOT, "cloud", "*.sh")) + glob.glob(os.path.join(ROOT, "cloud", "*.yaml"))) + [
    "hptuning_config.yaml"]


# where a shell line starts a command: its start (after `exec` or VAR=value), a $( ), a pipe, && or ;
COMMAND_START = re.compile(r"(?:^\s*(?:exec\s+|\w+=\S*\s+)*|\$\(|[|&;]\s*|\()gcloud ")


def shown_commands():
    """(page, the gcloud command's words up to a pipe, &&, ; or the end of a $(...)) for each gcloud command."""
    found = []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        if page.endswith(".md"):  # the shell blocks only
            text = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
        if page.endswith(".yaml"):  # the commands are the comments' indented examples
            text = "\n".join(line[1:] for line in text.splitlines() if re.match(r"#\s{2,}\S", line))
        else:
            text = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in text.splitlines())
        text = re.sub(r"\\\n\s*", " ", text)  # continued lines
        for line in text.splitlines():
            for start in [m.end() - len("gcloud ") for m in COMMAND_START.finditer(line)]:
                lexer = shlex.shlex(line[start:], posix=True, punctuation_chars="|&;()")
                lexer.whitespace_split = True
                words = []
                try:
                    for word in lexer:
                        if word and set(word) <= set("|&;()"):
                            break
                        words.append(word)
                except ValueError:  # an unclosed quote in a comment's prose
                    continue
                found.append((os.path.basename(page), words[1:]))
    return found


def cli_tree():
    """gcloud's own command tree, as its shell completion reads it."""
    root = subprocess.run(["gcloud", "info", "--format", "value(installation.sdk_root)"], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout.strip()
    spec = importlib.util.spec_from_file_location("gcloud_completions",
                                                  os.path.join(root, "data", "cli", "gcloud_completions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STATIC_COMPLETION_CLI_TREE


def test_the_pages_show_the_cloud_steps_in_order():
    commands = [" ".join(words[:3]) for page, words in shown_commands() if page == "cloud.md"]
    for step in ("config set project", "services enable aiplatform.googleapis.com", "storage buckets create",
                 "artifacts repositories create", "auth configure-docker", "storage buckets add-iam-policy-binding",
                 "ai hp-tuning-jobs describe"):
        assert any(c.startswith(step) for c in commands), step
    # the one-time setup comes before the first job
    first_job = next(n for n, c in enumerate(commands) if c.startswith("ai custom-jobs"))
    assert max(n for n, c in enumerate(commands) if c.startswith("auth configure-docker")) < first_job
    assert not [page for page, words in shown_commands() if words[:1] == ["gsutil"]]


@needs_gcloud
def test_every_gcloud_command_shown_parses_as_written(tmp_path):
    tree = cli_tree()
    commands = shown_commands()
    assert len(commands) >= 20
    paths = set()
    for page, words in commands:
        node, path = tree, []
        for word in words:
            if word not in node.get("commands", {}):
                break
            node, path = node["commands"][word], path + [word]
        assert node.get("commands") is None or not node["commands"] or path[-1:] == ["set"], (
            "{}: gcloud {} names a command group, not a command".format(page, " ".join(words)))
        for word in words[len(path):]:
            if word == "--":  # the rest is the trainer's
                break
            if word.startswith("--"):
                flag = word.split("=")[0]
                assert flag in node.get("flags", {}) or flag in tree["flags"], "{}: gcloud {}: no flag {}".format(
                    page, " ".join(path), flag)
        paths.add(tuple(path))
    env = gcloud_env(tmp_path)

    def helps(path):
        return path, subprocess.run(["gcloud"] + list(path) + ["--help"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=120)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for path, result in pool.map(helps, sorted(paths)):
            assert result.returncode == 0 and "NAME" in result.stdout, (path, result.stderr[-500:])
