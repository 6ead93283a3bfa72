"""How programs read their arguments: a declarative table of each program's options (which
take a value, which carry code, where the command a wrapper runs begins), and a getopt
reader that splits an argv the way the program itself would (combined short flags such as
`-tAc`, a value attached or separate, `--name=value`, `--`).

The table is data: adding a program is adding an entry."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Program:
    """One program's argument conventions."""

    valued: frozenset[str] = frozenset()
    """Options that take a value (`-u`, `--user`); a long one may also be `--user=x`."""
    multi: dict[str, int] = field(default_factory=dict)
    """Options that take more than one value, and how many (`bwrap --bind SRC DEST`)."""
    code: dict[str, str] = field(default_factory=dict)
    """Options whose value is code, and its language: shell, sql, python, perl, ruby, node,
    php, awk, git-config."""
    flag_code: dict[str, str] = field(default_factory=dict)
    """Flags (taking no value) that make the first operand code: `bash -c CMD`."""
    runs: str | None = None
    """What the operands are: `argv` (a command to run), `string` (a shell command line,
    the operands joined), `strings` (each operand a shell command line), `code:LANG` (the
    first operand is code in LANG) or None."""
    skip: int = 0
    """Operands before the command (timeout's duration, chroot's folder, ssh's host)."""
    permute: bool = False
    """Options may follow operands (GNU style); for a wrapper, options end at the first
    operand."""
    stdin: str | None = None
    """What the program does with its standard input when no code is given: `shell`,
    `sql`, `python`, ... (it runs it) or None."""


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


_SHELL = Program(valued=_set("-o", "+o", "-O", "+O", "--rcfile", "--init-file"),
                 flag_code={"c": "shell"}, runs="script", stdin="shell")
_PYTHON = Program(valued=_set("-W", "-X", "-m", "-Q"), code={"-c": "python"}, runs="script",
                  stdin="python")

PROGRAMS: dict[str, Program] = {
    **{name: _SHELL for name in ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash",
                                 "fish", "yash", "posh")},
    **{name: _PYTHON for name in ("python", "python2", "python3", "pypy", "pypy3",
                                  "python3.9", "python3.10", "python3.11", "python3.12",
                                  "python3.13")},
    "perl": Program(valued=_set("-I", "-M", "-m", "-x", "-C", "-0"),
                    code={"-e": "perl", "-E": "perl"}, runs="script", stdin="perl"),
    "ruby": Program(valued=_set("-I", "-r", "-C", "-E", "-x"), code={"-e": "ruby"},
                    runs="script", stdin="ruby"),
    "node": Program(valued=_set("-r", "--require", "--input-type", "--import", "--loader"),
                    code={"-e": "node", "--eval": "node", "-p": "node", "--print": "node"},
                    runs="script", stdin="node"),
    "nodejs": Program(code={"-e": "node", "--eval": "node", "-p": "node"}, runs="script",
                      stdin="node"),
    "deno": Program(),
    "php": Program(valued=_set("-c", "-d", "-f"), code={"-r": "php"}, runs="script",
                   stdin="php"),
    "awk": Program(valued=_set("-F", "-v", "-f"), runs="code:awk", permute=False),
    "gawk": Program(valued=_set("-F", "-v", "-f", "-i", "-l"), runs="code:awk"),
    "mawk": Program(valued=_set("-F", "-v", "-f"), runs="code:awk"),
    "psql": Program(valued=_set("-d", "-h", "-p", "-U", "-f", "-o", "-v", "-P", "-L", "-T",
                                "-F", "-R", "--dbname", "--host", "--port", "--username",
                                "--file", "--output", "--set", "--variable", "--pset",
                                "--log-file", "--field-separator", "--record-separator"),
                    code={"-c": "sql", "--command": "sql"}, permute=True, stdin="sql"),
    "sudo": Program(valued=_set("-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-R",
                                "-T", "--user", "--group", "--chdir", "--prompt",
                                "--close-from", "--host", "--role", "--type", "--other-user",
                                "--chroot", "--command-timeout"), runs="argv"),
    "doas": Program(valued=_set("-u", "-C"), runs="argv"),
    "pkexec": Program(valued=_set("--user"), runs="argv"),
    "su": Program(valued=_set("-s", "--shell", "-g", "--group", "-G", "-w"),
                  code={"-c": "shell", "--command": "shell", "-C": "shell",
                        "--session-command": "shell"}, permute=True),
    "runuser": Program(valued=_set("-u", "--user", "-g", "--group", "-G", "-s", "--shell",
                                   "-w"), code={"-c": "shell", "--command": "shell"},
                       permute=True),
    "sg": Program(code={"-c": "shell"}, runs="string", skip=1),
    "script": Program(valued=_set("-E", "-I", "-O", "-B", "-T", "-t", "-m", "--log-io",
                                  "--log-in", "--log-out", "--log-timing", "--echo"),
                      code={"-c": "shell", "--command": "shell"}, permute=True),
    "flock": Program(valued=_set("-w", "--timeout", "-E", "--conflict-exit-code"),
                     code={"-c": "shell", "--command": "shell"}, runs="argv", skip=1),
    "timeout": Program(valued=_set("-s", "--signal", "-k", "--kill-after"), runs="argv",
                       skip=1),
    "gtimeout": Program(valued=_set("-s", "--signal", "-k", "--kill-after"), runs="argv",
                        skip=1),
    "nice": Program(valued=_set("-n", "--adjustment"), runs="argv"),
    "renice": Program(valued=_set("-n", "-g", "-p", "-u")),
    "ionice": Program(valued=_set("-c", "-n", "-p", "-P", "-u", "--class", "--classdata"),
                      runs="argv"),
    "chrt": Program(valued=_set("-T", "-P", "-D", "--sched-runtime", "--sched-period",
                                "--sched-deadline"), runs="argv", skip=1),
    "taskset": Program(valued=_set("--cpu-list"), runs="argv", skip=1),
    "stdbuf": Program(valued=_set("-i", "-o", "-e", "--input", "--output", "--error"),
                      runs="argv"),
    "setsid": Program(runs="argv"),
    "nohup": Program(runs="argv"),
    "env": Program(valued=_set("-u", "--unset", "-C", "--chdir"),
                   code={"-S": "shell", "--split-string": "shell"}, runs="argv"),
    "command": Program(runs="argv"),
    "builtin": Program(runs="argv"),
    "exec": Program(valued=_set("-a"), runs="argv"),
    "time": Program(valued=_set("-f", "-o", "--format", "--output"), runs="argv"),
    "unbuffer": Program(runs="argv"),
    "chronic": Program(runs="argv"),
    "torsocks": Program(runs="argv"),
    "proxychains": Program(valued=_set("-f"), runs="argv"),
    "proxychains4": Program(valued=_set("-f"), runs="argv"),
    "fakeroot": Program(runs="argv"),
    "eatmydata": Program(runs="argv"),
    "catchsegv": Program(runs="argv"),
    "faketime": Program(valued=_set("-m", "-f"), runs="argv", skip=1),
    "chroot": Program(valued=_set("--userspec", "--groups"), runs="argv", skip=1),
    "unshare": Program(valued=_set("-S", "--setuid", "-G", "--setgid", "--propagation",
                                   "-R", "--root", "-w", "--wd", "--map-user",
                                   "--map-group", "--kill-child"), runs="argv"),
    "nsenter": Program(valued=_set("-t", "--target", "-S", "--setuid", "-G", "--setgid",
                                   "-r", "-w", "--root", "--wd"), runs="argv"),
    "systemd-run": Program(valued=_set("-p", "--property", "-u", "--unit", "-E",
                                       "--setenv", "--description", "--slice", "-M",
                                       "--machine", "--uid", "--gid", "--nice",
                                       "--working-directory", "--on-active", "--on-calendar",
                                       "--timer-property", "--path-property",
                                       "--socket-property"), runs="argv"),
    "firejail": Program(runs="argv"),
    "strace": Program(valued=_set("-e", "-o", "-p", "-s", "-u", "-E", "-a", "-b", "-I",
                                  "-O", "-S", "-P", "-X"), runs="argv"),
    "ltrace": Program(valued=_set("-e", "-o", "-p", "-s", "-u", "-a", "-A", "-D", "-F",
                                  "-l", "-n"), runs="argv"),
    "busybox": Program(runs="argv"),
    "xargs": Program(valued=_set("-a", "--arg-file", "-d", "--delimiter", "-E", "-e",
                                 "--eof", "-I", "--replace", "-i", "-L", "-l",
                                 "--max-lines", "-n", "--max-args", "-P", "--max-procs",
                                 "-s", "--max-chars", "--process-slot-var"), runs="argv"),
    "parallel": Program(valued=_set("-j", "--jobs", "-S", "--sshlogin", "--joblog",
                                    "--results", "-a", "--arg-file", "--delay", "--timeout",
                                    "-N", "--max-args", "-d", "--delimiter"), runs="argv"),
    "watch": Program(valued=_set("-n", "--interval", "-d", "--differences", "-g",
                                 "--chgexit"), runs="string"),
    "ssh": Program(valued=_set("-o", "-p", "-i", "-l", "-F", "-J", "-L", "-R", "-D", "-b",
                               "-c", "-e", "-m", "-O", "-Q", "-S", "-W", "-w", "-E", "-B",
                               "-I"), runs="string", skip=1),
    "at": Program(valued=_set("-q", "-f", "-t"), stdin="shell"),
    "batch": Program(valued=_set("-q", "-f"), stdin="shell"),
    "crontab": Program(valued=_set("-u"), stdin="crontab"),
    "npx": Program(valued=_set("-p", "--package"), code={"-c": "shell", "--call": "shell"},
                   runs="argv"),
    "coproc": Program(runs="argv"),
    "dtach": Program(valued=_set("-n", "-c", "-A", "-a", "-r", "-e"), runs="argv"),
    "daemonize": Program(valued=_set("-a", "-c", "-e", "-E", "-o", "-p", "-l", "-u"),
                         runs="argv"),
    "screen": Program(valued=_set("-S", "-c", "-L", "-Logfile", "-X", "-p", "-r", "-x", "-e",
                                  "-T", "-t", "-h"), runs=None),
    "tmux-new": Program(valued=_set("-s", "-n", "-t", "-c", "-x", "-y", "-F", "-e", "-f")),
    "tmux-new-session": Program(valued=_set("-s", "-n", "-t", "-c", "-x", "-y", "-F", "-e",
                                            "-f")),
    "tmux-new-window": Program(valued=_set("-n", "-t", "-c", "-F", "-e")),
    "tmux-split-window": Program(valued=_set("-t", "-c", "-l", "-F", "-e", "-p")),
    "tmux-send-keys": Program(valued=_set("-t", "-N")),
    "tmux-run-shell": Program(valued=_set("-t", "-d")),
    "docker-exec": Program(valued=_set("-u", "--user", "-w", "--workdir", "-e", "--env",
                                       "--env-file")),
    "docker-run": Program(valued=_set("-u", "--user", "-w", "--workdir", "-e", "--env",
                                      "--env-file", "-v", "--volume", "--name", "--network",
                                      "--entrypoint", "-p", "--publish", "--mount", "-m",
                                      "--memory", "--platform", "-l", "--label")),
    "podman-exec": Program(valued=_set("-u", "--user", "-w", "--workdir", "-e", "--env")),
    "podman-run": Program(valued=_set("-u", "--user", "-w", "--workdir", "-e", "--env",
                                      "-v", "--volume", "--name", "--network", "--entrypoint")),
    "kubectl-exec": Program(valued=_set("-c", "--container", "-n", "--namespace")),
    "git-rebase": Program(valued=_set("-x", "--exec", "-s", "--strategy", "-X", "--onto"),
                          permute=True),
    "git-filter-branch": Program(valued=_set("--tree-filter", "--index-filter",
                                             "--parent-filter", "--msg-filter",
                                             "--commit-filter", "--tag-name-filter",
                                             "--env-filter", "--subdirectory-filter",
                                             "-d", "--setup"), permute=True),
    "mktemp": Program(valued=_set("-p", "--tmpdir", "--suffix"), permute=True),
    "hash": Program(valued=_set("-p"), permute=True),
    "curl": Program(valued=_set("-o", "--output", "-d", "--data", "-H", "--header", "-X",
                                "--request", "-u", "--user", "-T", "--upload-file", "-F",
                                "--form", "-A", "--user-agent", "-e", "--referer", "-b",
                                "--cookie", "-c", "--cookie-jar", "-m", "--max-time", "-w",
                                "--write-out", "-x", "--proxy", "--cacert", "--cert", "--key",
                                "--data-raw", "--data-binary", "--connect-timeout"),
                    permute=True),
    "wget": Program(valued=_set("-O", "--output-document", "-P", "--directory-prefix", "-o",
                                "--output-file", "-U", "--user-agent", "--header", "-t",
                                "--tries", "-T", "--timeout"), permute=True),
    **{name: Program(valued=_set("-t", "--target-directory", "-S", "--suffix", "-m",
                                 "--mode", "-o", "--owner", "-g", "--group", "--backup",
                                 "--reflink", "--sparse", "--preserve", "--context"),
                     permute=True) for name in ("cp", "mv", "install", "ln")},
    "unzip": Program(valued=_set("-d", "-x", "-P"), permute=True),
    "sed": Program(valued=_set("-l", "--line-length", "-s", "-f", "--file"),
                   code={"-e": "sed", "--expression": "sed"}, runs="code:sed", permute=True),
    "ed": Program(valued=_set("-p"), stdin="ed"),
    **{name: Program(valued=_set("-u", "-h", "-P", "-D", "-S", "-p", "--user", "--host",
                                 "--port", "--database", "--socket", "--password",
                                 "--defaults-file", "--defaults-extra-file", "--protocol",
                                 "--default-character-set", "--login-path"),
                     code={"-e": "mysql", "--execute": "mysql"}, permute=True)
       for name in ("mysql", "mariadb")},
    "duckdb": Program(valued=_set("-cmd", "-init", "-separator", "-nullvalue"),
                      code={"-c": "sqlite", "-cmd": "sqlite"}, permute=True),
    "sqlite3": Program(valued=_set("-cmd", "-init", "-separator", "-nullvalue"),
                       code={"-cmd": "sqlite"}),
    "make": Program(valued=_set("-C", "--directory", "-f", "--file", "--makefile", "-I",
                                "--include-dir", "-j", "--jobs", "-o", "-W", "-l"),
                    code={"--eval": "make"}, permute=True),
    "expect": Program(valued=_set("-f"), code={"-c": "tcl"}, runs="script", stdin="tcl"),
    "tclsh": Program(runs="script", stdin="tcl"),
    "lua": Program(valued=_set("-l"), code={"-e": "lua"}, runs="script", stdin="lua"),
    "luajit": Program(valued=_set("-l"), code={"-e": "lua"}, runs="script", stdin="lua"),
    "Rscript": Program(code={"-e": "r"}, runs="script"),
    "pnpx": Program(runs="argv"),
    "bunx": Program(runs="argv"),
    "find": Program(),
    "vim": Program(valued=_set("-c", "--cmd", "-S", "-u", "-i", "-w", "-W", "-T"),
                   code={"-c": "vim", "--cmd": "vim"}),
    "vi": Program(valued=_set("-c", "-u"), code={"-c": "vim"}),
    "nvim": Program(valued=_set("-c", "--cmd", "-u"), code={"-c": "vim", "--cmd": "vim"}),
    "ex": Program(valued=_set("-c"), code={"-c": "vim"}),
    "gdb": Program(valued=_set("-ex", "-iex", "-x", "-ix", "-p", "-c", "-d", "--eval-command",
                               "--init-eval-command"),
                   code={"-ex": "gdb", "-iex": "gdb", "--eval-command": "gdb",
                         "--init-eval-command": "gdb"}),
    "tar": Program(valued=_set("-C", "--directory", "-f", "--file", "-T", "--files-from",
                               "-X", "--exclude-from", "-I", "--use-compress-program",
                               "--to-command", "--checkpoint-action", "--rsh-command",
                               "--info-script", "--new-volume-script", "-F"),
                   code={"-I": "argv-string", "--use-compress-program": "argv-string",
                         "--to-command": "shell", "--rsh-command": "argv-string",
                         "--info-script": "shell", "--new-volume-script": "shell",
                         "-F": "shell", "--checkpoint-action": "tar-action"},
                   permute=True),
    "zip": Program(valued=_set("-TT", "--unzip-command", "-b", "-n", "-t", "-tt", "-i",
                               "-x"), code={"-TT": "shell", "--unzip-command": "shell"},
                   permute=True),
    "split": Program(valued=_set("-a", "-b", "-C", "-l", "-n", "-t", "--filter",
                                 "--additional-suffix"), code={"--filter": "shell"},
                     permute=True),
    "rsync": Program(valued=_set("-e", "--rsh", "--rsync-path", "--exclude", "--include",
                                 "--filter", "-f", "--files-from", "--password-file",
                                 "--log-file", "--chmod", "--chown", "-B", "--bwlimit"),
                     code={"-e": "argv-string", "--rsh": "argv-string",
                           "--rsync-path": "shell"}, permute=True),
    "git": Program(valued=_set("-C", "-c", "--git-dir", "--work-tree", "--namespace",
                               "--exec-path", "--config-env"), code={"-c": "git-config"}),
    "uv": Program(valued=_set("--with", "--python", "-p", "--directory", "--project",
                              "--env-file", "--index-url", "--extra-index-url", "--from")),
    # Wrappers that run their operands as a command: switching user or limits, inits,
    # profilers, sandboxes, sessions and secret injectors.
    **{name: Program(runs="argv", skip=1) for name in (
        "gosu", "su-exec", "s6-setuidgid", "setuidgid", "envuidgid", "envdir", "s6-envdir",
        "setlock", "lckdo", "logsave", "setarch")},
    **{name: Program(runs="argv") for name in (
        "catatonit", "linux32", "linux64", "i386", "x86_64", "nocache", "gamemoderun",
        "mangohud", "prime-run", "optirun", "primusrun", "torify", "tsocks", "fakechroot",
        "pgrphack", "with-contenv", "run-one", "run-this-one", "keep-one-running", "nq",
        "tsp", "flatpak-spawn", "scan-build", "ccache", "sccache", "distcc", "icecc",
        "memusage", "uftrace", "dbus-launch")},
    "tini": Program(valued=_set("-p", "-e"), runs="argv"),
    "dumb-init": Program(valued=_set("-r", "--rewrite"), runs="argv"),
    "valgrind": Program(runs="argv"),
    "heaptrack": Program(valued=_set("-o", "--output", "-p", "--pid"), runs="argv"),
    "bwrap": Program(valued=_set("--unsetenv", "--chdir", "--hostname", "--uid", "--gid",
                                 "--tmpfs", "--proc", "--dev", "--dir", "--remount-ro",
                                 "--seccomp", "--info-fd", "--json-status-fd", "--block-fd",
                                 "--userns-block-fd", "--sync-fd", "--lock-file",
                                 "--exec-label", "--file-label", "--cap-add", "--cap-drop",
                                 "--args", "--userns", "--userns2", "--pidns", "--argv0",
                                 "--perms", "--size", "--overlay-src", "--tmp-overlay",
                                 "--ro-overlay", "--add-seccomp-fd", "--mqueue"),
                     multi={"--bind": 2, "--bind-try": 2, "--dev-bind": 2,
                            "--dev-bind-try": 2, "--ro-bind": 2, "--ro-bind-try": 2,
                            "--symlink": 2, "--setenv": 2, "--chmod": 2, "--file": 2,
                            "--bind-data": 2, "--ro-bind-data": 2, "--bind-fd": 2,
                            "--ro-bind-fd": 2, "--overlay": 3}, runs="argv"),
    "systemd-inhibit": Program(valued=_set("--what", "--who", "--why", "--mode"),
                               runs="argv"),
    "systemd-cat": Program(valued=_set("-t", "--identifier", "-p", "--priority",
                                       "--stderr-priority"), runs="argv"),
    "xvfb-run": Program(valued=_set("-n", "--server-num", "-s", "--server-args", "-f",
                                    "--auth-file", "-e", "--error-file", "-p",
                                    "--xauth-protocol", "-w", "--wait"), runs="argv"),
    "prlimit": Program(valued=_set("-p", "--pid", "-o", "--output"), runs="argv"),
    "setpriv": Program(valued=_set("--reuid", "--regid", "--groups", "--inh-caps",
                                   "--ambient-caps", "--bounding-set", "--securebits",
                                   "--pdeathsig", "--selinux-label", "--apparmor-profile",
                                   "--landlock-access", "--landlock-rule", "--ptracer"),
                       runs="argv"),
    "numactl": Program(valued=_set("-C", "--physcpubind", "-N", "--cpunodebind", "-m",
                                   "--membind", "-i", "--interleave", "-p", "--preferred",
                                   "-P", "--preferred-many", "-w", "--weighted-interleave"),
                       runs="argv"),
    "caffeinate": Program(valued=_set("-w", "-t"), runs="argv"),
    "dbus-run-session": Program(valued=_set("--config-file", "--dbus-daemon"), runs="argv"),
    "ssh-agent": Program(valued=_set("-a", "-E", "-t", "-P", "-O"), runs="argv"),
    "chpst": Program(valued=_set("-u", "-U", "-b", "-e", "-/", "-C", "-n", "-l", "-L", "-m",
                                 "-d", "-o", "-p", "-f", "-c", "-r", "-t"), runs="argv"),
    "softlimit": Program(valued=_set("-m", "-a", "-d", "-o", "-p", "-f", "-c", "-r", "-t",
                                     "-s", "-l"), runs="argv"),
    "cgexec": Program(valued=_set("-g"), runs="argv"),
    "trickle": Program(valued=_set("-d", "-u", "-w", "-t", "-l", "-n"), runs="argv"),
    "cpulimit": Program(valued=_set("-l", "--limit", "-p", "--pid", "-e", "--exe", "-m",
                                    "--cpu"), runs="argv"),
    "timelimit": Program(valued=_set("-t", "-T", "-s", "-S"), runs="argv"),
    "retry": Program(valued=_set("-t", "--tries", "-d", "--delay", "-u", "--until"),
                     runs="argv"),
    "runcon": Program(valued=_set("-u", "--user", "-r", "--role", "-t", "--type", "-l",
                                  "--range"), runs="argv"),
    "proot": Program(valued=_set("-r", "--rootfs", "-b", "--bind", "-m", "--mount", "-w",
                                 "--pwd", "--cwd", "-q", "--qemu", "-k", "--kernel-release"),
                     runs="argv"),
    "bear": Program(valued=_set("--output", "--config", "--library"), runs="argv"),
    "daemon": Program(valued=_set("-n", "--name", "-u", "--user", "-C", "--chdir", "-o",
                                  "--output"), runs="argv"),
    "watchexec": Program(valued=_set("-e", "--exts", "-w", "--watch", "-i", "--ignore",
                                     "-f", "--filter", "-d", "--debounce", "-s", "--signal",
                                     "--shell", "--project-origin", "--workdir"),
                         runs="argv"),
    "entr": Program(flag_code={"s": "shell"}, runs="argv"),
    "mpirun": Program(valued=_set("-n", "-np", "-c", "-N", "-H", "--host", "--hostfile",
                                  "-hostfile", "--map-by", "--bind-to", "-x", "--mca",
                                  "-wdir", "--wdir"), runs="argv"),
    "mpiexec": Program(valued=_set("-n", "-np", "-c", "-N", "-H", "--host", "--hostfile",
                                   "-hostfile", "--map-by", "--bind-to", "-x", "--mca"),
                       runs="argv"),
    "srun": Program(valued=_set("-n", "--ntasks", "-N", "--nodes", "-p", "--partition",
                                "-t", "--time", "-c", "--cpus-per-task", "-J",
                                "--job-name", "-A", "--account", "--mem", "-w",
                                "--nodelist", "--gres"), runs="argv"),
    "dotenv": Program(valued=_set("-e", "-v", "-c"), runs="argv"),
    "hyperfine": Program(valued=_set("-r", "--runs", "-w", "--warmup", "-m", "--min-runs",
                                     "-M", "--max-runs", "-S", "--shell", "-n",
                                     "--command-name", "--export-json", "--export-csv",
                                     "--export-markdown", "--export-asciidoc",
                                     "--export-orgmode", "-u", "--time-unit", "--style",
                                     "-D", "--parameter-step-size", "--output", "--input",
                                     "--sort"),
                         multi={"-L": 2, "--parameter-list": 2, "-P": 3,
                                "--parameter-scan": 3},
                         code={"-p": "shell", "--prepare": "shell", "-c": "shell",
                               "--cleanup": "shell", "-s": "shell", "--setup": "shell",
                               "--conclude": "shell"},
                         runs="strings", permute=True),
    "nix-shell": Program(valued=_set("-A", "--attr", "-I", "--include"),
                         multi={"--arg": 2, "--argstr": 2},
                         code={"--run": "shell", "--command": "shell"}, permute=True),
    "perf": Program(valued=_set("-e", "--event", "-o", "--output", "-p", "--pid", "-t",
                                "--tid", "-r", "--repeat", "-C", "--cpu", "-G", "--cgroup",
                                "-x", "--field-separator", "-I", "--interval-print", "-F",
                                "--freq", "-c", "--count", "-g", "--call-graph", "-u",
                                "--uid", "-D", "--delay", "--filter")),
    "rr": Program(),
    "direnv": Program(),
    "aws-vault": Program(valued=_set("--backend", "--keychain", "--prompt", "--duration",
                                     "-d", "--region", "--mfa-token", "-t")),
    "op": Program(valued=_set("--env-file", "--account", "--config", "--session")),
    "doppler": Program(valued=_set("-p", "--project", "-c", "--config", "--token",
                                   "--scope", "--command", "--name-transformer")),
    "infisical": Program(valued=_set("--env", "--projectId", "--token", "--path",
                                     "--command", "--domain")),
    "dotenvx": Program(valued=_set("-f", "--env-file", "-e", "--env")),
    "ip": Program(valued=_set("-n", "-netns", "-f", "-family", "-b", "-batch")),
    "toolbox": Program(valued=_set("-c", "--container", "-r", "--release", "-d",
                                   "--distro")),
    "distrobox": Program(valued=_set("-n", "--name")),
    "bundle": Program(valued=_set("--gemfile")),
    "arch": Program(valued=_set("-arch", "-e"), runs="argv"),
    "sandbox-exec": Program(valued=_set("-f", "-n", "-p", "-D"), runs="argv"),
    "schroot": Program(valued=_set("-c", "--chroot", "-u", "--user", "-d", "--directory",
                                   "-r", "--run-session", "-o", "--option"), runs="argv"),
    "sem": Program(valued=_set("-j", "--jobs", "--id", "--semaphorename",
                               "--semaphoretimeout", "--st"), runs="argv"),
    **{name: Program(valued=_set("-e", "--environment", "--manifest-path", "-C", "--cd",
                                 "--env", "-c", "--config"))
       for name in ("pixi", "mise", "rtx", "devbox", "asdf")},
    "poetry": Program(valued=_set("-C", "--directory", "-P", "--project")),
}
"""Programs whose arguments the analysis needs to read."""

RUNNERS: dict[str, dict[str, int]] = {
    **{name: {"run": 0} for name in ("uv", "poetry", "pipx", "pdm", "hatch", "conda",
                                     "pipenv", "op", "doppler", "infisical", "dotenvx",
                                     "toolbox")},
    "pnpm": {"exec": 0}, "yarn": {"exec": 0}, "npm": {"exec": 0}, "bun": {"x": 0, "run": 0},
    "bundle": {"exec": 0}, "direnv": {"exec": 1}, "aws-vault": {"exec": 1},
    "ip": {"netns exec": 1}, "rr": {"record": 0, "replay": 0},
    "perf": {"stat": 0, "record": 0, "trace": 0, "mem record": 0, "c2c record": 0,
             "kmem record": 0, "lock record": 0, "sched record": 0},
    "distrobox": {"enter": 0}, "pixi": {"run": 0, "exec": 0}, "mise": {"exec": 0, "x": 0},
    "rtx": {"exec": 0, "x": 0}, "asdf": {"exec": 0}, "devbox": {"run": 0},
}
"""Tools whose subcommand (one or more words) runs its operands as a command, after their
own options and the operands it skips (`uv run CMD ...`, `direnv exec DIR CMD ...`)."""

@dataclass(frozen=True)
class ProjectFile:
    """A file of the project that a tool runs as code when it starts (`pytest` imports
    conftest.py, `pip install .` runs setup.py): written earlier in the same line, it is
    judged as the code it is."""

    program: str
    """The tool (`python -m TOOL` counts as TOOL)."""
    words: tuple[str, ...]
    """Subcommand words it must be given first (`pip install`)."""
    names: tuple[str, ...]
    """The file's names."""
    language: str
    where: str
    """`below`: anywhere under the folder the tool runs in; `here`: in that folder;
    `operand`: in the folder an operand names (`pip install ./pkg`)."""


PROJECT_FILES: tuple[ProjectFile, ...] = (
    *(ProjectFile(name, (), ("conftest.py",), "python", "below") for name in ("pytest", "py.test")),
    *(ProjectFile("pip", (word,), ("setup.py",), "python", "operand")
      for word in ("install", "wheel", "download")),
    ProjectFile("uv", ("pip", "install"), ("setup.py",), "python", "operand"),
    ProjectFile("uv", ("build",), ("setup.py",), "python", "operand"),
    ProjectFile("build", (), ("setup.py",), "python", "operand"),
    ProjectFile("tox", (), ("setup.py",), "python", "here"),
    ProjectFile("nox", (), ("noxfile.py",), "python", "here"),
    *(ProjectFile(name, (), ("tasks.py",), "python", "here") for name in ("invoke", "inv")),
    ProjectFile("fab", (), ("fabfile.py",), "python", "here"),
    ProjectFile("rake", (), ("Rakefile", "rakefile", "Rakefile.rb"), "ruby", "here"),
    ProjectFile("just", (), ("justfile", "Justfile", ".justfile"), "just", "here"),
    ProjectFile("gulp", (), ("gulpfile.js",), "node", "here"),
    ProjectFile("grunt", (), ("Gruntfile.js",), "node", "here"),
)
"""Project files tools run (package.json scripts are `package_scripts`)."""

_SCRIPT_RUNNERS = {"npm": ("run", "run-script", "rum", "urn"), "yarn": ("run",),
                   "pnpm": ("run", "run-script"), "bun": ("run",)}
_SCRIPT_SHORTHANDS = {"test": "test", "t": "test", "tst": "test", "start": "start",
                      "stop": "stop", "restart": "restart"}
_INSTALLS = {"npm": ("install", "i", "in", "isntall", "ci", "clean-install", "rebuild"),
             "yarn": ("install",), "pnpm": ("install", "i", "rebuild"),
             "bun": ("install", "i")}
_OWN_COMMANDS = frozenset({
    "add", "remove", "rm", "install", "i", "upgrade", "up", "update", "init", "info", "why",
    "dlx", "exec", "x", "workspace", "workspaces", "config", "cache", "bin", "link", "unlink",
    "pack", "publish", "global", "list", "ls", "outdated", "audit", "version", "versions",
    "create", "node", "set", "plugin", "login", "logout", "help", "constraints", "patch",
    "explain", "store", "env", "import", "prune", "fetch", "licenses", "root", "setup",
    "self-update", "deploy", "recursive", "-r", "build", "pm"})
"""Commands of yarn, pnpm and bun themselves: any other word runs the package script."""
_LIFECYCLE = ("preinstall", "install", "postinstall", "prepublish", "preprepare", "prepare",
              "postprepare")


def package_scripts(program: str, operands: list[str]) -> tuple[str, ...]:
    """The package.json scripts a package manager runs, in order (`npm t`: pretest, test,
    posttest; `yarn` alone: the install lifecycle)."""
    name = base(program)
    if name not in _SCRIPT_RUNNERS:
        return ()
    first = operands[0] if operands else ""
    script = None
    if first in _SCRIPT_RUNNERS[name] and len(operands) > 1:
        script = operands[1]
    elif first in _SCRIPT_SHORTHANDS:
        script = _SCRIPT_SHORTHANDS[first]
    elif (not operands and name != "npm") or (first in _INSTALLS[name] and (
            len(operands) == 1 or first in ("ci", "clean-install", "rebuild"))):
        return _LIFECYCLE
    elif name != "npm" and first and first not in _OWN_COMMANDS:
        script = first
    return (f"pre{script}", script, f"post{script}") if script else ()


JUDGED = frozenset({
    "rm", "rmdir", "unlink", "shred", "srm", "wipe", "dd", "mkfs", "mke2fs", "mkswap",
    "wipefs", "blkdiscard", "sgdisk", "sfdisk", "fdisk", "parted", "kill", "pkill",
    "killall", "reboot", "shutdown", "poweroff", "halt", "kexec", "systemctl", "loginctl",
    "init", "telinit", "nvme", "hdparm", "sg_format", "chmod", "chown", "chgrp", "chattr",
    "setfacl", "truncate", "mv", "ln", "link", "scp", "tee", "touch", "mkdir", "gzip",
    "gunzip", "bzip2", "bunzip2", "xz", "unxz", "zstd", "patch", "sponge", "mysql"})
"""Programs the rules judge by name in their own code (the commands of `effects` are
known by its table): an argument of a program the guard does not model that names one
may be a command it runs (`unknown-wrapper rm -rf /etc`)."""


@dataclass
class Parsed:
    """An argv read by its program's conventions."""

    options: list[tuple[str, str | None]] = field(default_factory=list)
    """Options in order, with their value (None for a flag)."""
    operands: list[str] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    """For a wrapper: the command it runs (after its options and skipped operands)."""

    def has(self, *names: str) -> bool:
        """Whether any of the options `names` (`-r`, `--recursive`) was given."""
        return any(option in names for option, _ in self.options)

    def value(self, *names: str) -> str | None:
        """The value of the last of the options `names` given."""
        found = None
        for option, value in self.options:
            if option in names:
                found = value
        return found


def base(program: str) -> str:
    """The name a program is known by (`/usr/bin/python3.11` -> `python3.11`)."""
    return posixpath.basename(program)


def spec(program: str) -> Program:
    """The conventions of `program` (a default that permutes, GNU style, when unknown)."""
    name = base(program)
    if name in PROGRAMS:
        return PROGRAMS[name]
    if re.fullmatch(r"python\d[\d.]*", name):
        return _PYTHON
    return _DEFAULT


_DEFAULT = Program(permute=True)


def parse(program: str, args: tuple[str, ...] | list[str]) -> Parsed:
    """Read `args` the way `program` reads them."""
    conventions = spec(program)
    parsed = Parsed()
    wrapper = conventions.runs in ("argv", "string")
    index = 0
    skipped = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            parsed.operands.extend(args[index + 1 :])
            break
        if arg.startswith("--") and len(arg) > 2 and arg not in conventions.multi:
            name, equals, value = arg.partition("=")
            if equals:
                parsed.options.append((name, value))
            elif name in conventions.valued or name in conventions.code:
                parsed.options.append((name, args[index + 1] if index + 1 < len(args) else ""))
                index += 1
            else:
                parsed.options.append((name, None))
            index += 1
            continue
        if arg in conventions.valued or arg in conventions.code:  # -ex, -TT, +o
            parsed.options.append((arg, args[index + 1] if index + 1 < len(args) else ""))
            index += 2
            continue
        if arg in conventions.multi:  # bwrap --bind SRC DEST
            count = conventions.multi[arg]
            parsed.options.append((arg, " ".join(args[index + 1 : index + 1 + count])))
            index += 1 + count
            continue
        if len(arg) > 1 and arg[0] in "-+":
            index += _cluster(arg, args, index, conventions, parsed)
            continue
        # An operand.
        if wrapper and skipped >= conventions.skip:
            parsed.operands.extend(args[index:])
            break
        parsed.operands.append(arg)
        skipped += 1
        if not conventions.permute and not wrapper:
            parsed.operands.extend(args[index + 1 :])
            break
        index += 1
    if wrapper:
        parsed.rest = parsed.operands[conventions.skip :]
    return parsed


def _cluster(arg: str, args: tuple[str, ...] | list[str], index: int, conventions: Program,
             parsed: Parsed) -> int:
    """Read `-abc` (or `+o`): flags until one that takes a value, which takes the rest of
    the word or the next argument. Returns how many arguments were used."""
    sign = arg[0]
    for position in range(1, len(arg)):
        option = sign + arg[position]
        if option in conventions.valued or option in conventions.code:
            attached = arg[position + 1 :]
            if attached:
                parsed.options.append((option, attached))
                return 1
            parsed.options.append((option, args[index + 1] if index + 1 < len(args) else ""))
            return 2
        parsed.options.append((option, None))
    return 1

