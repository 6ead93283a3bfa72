"""Commands whose effect is known by their name: a declarative table of programs (and
the words of their argv) that drop databases, reset them, or destroy infrastructure.

A row is `program word word ...`: the program (a `*` pattern) and words that must all be
among its arguments (`*` patterns, letter case ignored; a word starting with `-` is a
flag it was given). Adding a command is adding a row."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Effect:
    """A command whose effect is known by its program's name and words."""

    rule_id: str
    program: str
    """The program's name (a `*` pattern), or the script or package binary an
    interpreter or package runner starts (`python manage.py`, `yarn prisma`)."""
    words: tuple[str, ...]
    what: str


def _effects(rule_id: str, what: str, *entries: str) -> tuple[Effect, ...]:
    """Effects of one rule and description: each entry is `program word word ...`."""
    return tuple(Effect(rule_id, entry.split()[0], tuple(entry.split()[1:]), what)
                 for entry in entries)


EFFECTS: tuple[Effect, ...] = (
    *_effects("shell.destructive-program", "drops a database", "dropdb", "pg_dropcluster",
              "mysqladmin drop"),
    *_effects("shell.destructive-program", "empties redis", "redis-cli flushall",
              "redis-cli flushdb", "valkey-cli flushall", "valkey-cli flushdb"),
    *_effects("shell.destructive-program", "signals every process", "killall5"),
    *_effects("shell.destructive-program", "deletes every scheduled job of the user",
              "crontab -r", "crontab -ri", "crontab -ir"),
    *_effects("shell.database-reset", "drops, empties, resets or migrates down a database",
              "alembic downgrade", "flask db downgrade", "manage.py flush", "manage.py reset_db",
              "manage.py migrate zero", "django-admin flush", "django-admin migrate zero",
              "rails db:drop*", "rails db:purge*", "rails db:reset", "rails db:schema:load",
              "rails db:rollback", "rails db:migrate:reset", "rails db:migrate:down",
              "rails db:truncate_all", "rake db:drop*", "rake db:purge*", "rake db:reset",
              "rake db:schema:load", "rake db:rollback", "rake db:migrate:reset",
              "rake db:migrate:down", "rake db:truncate_all",
              "prisma migrate reset", "prisma db push --force-reset",
              "sequelize* db:drop", "sequelize* db:migrate:undo*", "knex migrate:rollback",
              "knex migrate:down", "typeorm* schema:drop", "typeorm* migration:revert",
              "drizzle-kit drop", "artisan migrate:fresh", "artisan migrate:reset",
              "artisan migrate:refresh", "artisan migrate:rollback", "artisan db:wipe",
              "mix ecto.drop", "mix ecto.reset", "mix ecto.rollback",
              "dotnet ef database drop", "diesel database reset", "diesel migration revert",
              "diesel migration redo", "sqlx database drop", "sqlx database reset",
              "sqlx migrate revert", "goose reset", "goose down*", "migrate drop",
              "migrate down", "dbmate drop", "dbmate rollback", "dbmate down", "flyway clean",
              "flyway undo", "liquibase dropall", "liquibase drop-all", "liquibase rollback*",
              "supabase db reset", "heroku pg:reset", "pg_restore --clean", "pg_restore -c",
              "mongo* *.dropdatabase(*",
              "mongo* *.drop()*", "mongo* *.deletemany({})*", "mongo* *.remove({})*"),
    *_effects("shell.infrastructure-change", "deletes or replaces infrastructure outside "
              "the sandbox",
              "terraform destroy", "terraform apply -destroy", "terraform state rm",
              "terraform workspace delete", "tofu destroy", "tofu apply -destroy",
              "tofu state rm", "pulumi destroy", "pulumi stack rm", "cdk destroy",
              "serverless remove", "sls remove", "sam delete", "kubectl delete",
              "kubectl drain", "kubectl replace", "kubectl scale", "kubectl rollout undo",
              "kubectl patch *finalizers*", "helm uninstall", "helm delete", "helm rollback",
              "helm upgrade --force",
              "eksctl delete", "kind delete", "minikube delete", "k3d * delete",
              "docker rm", "docker rmi", "docker prune", "docker kill",
              "docker compose down -v", "docker compose down --volumes",
              "docker-compose down -v", "docker-compose down --volumes", "podman rm",
              "podman rmi", "podman prune", "podman kill", "aws rm", "aws rb", "aws delete*",
              "aws terminate*", "aws remove-*", "aws deregister*", "aws purge*",
              "aws destroy*", "gcloud delete", "gsutil rm", "gsutil rb", "az delete",
              "doctl delete", "hcloud delete", "linode-cli *delete", "oci delete",
              "openstack delete", "flyctl destroy", "fly destroy", "heroku apps:destroy",
              "vercel remove", "vercel rm", "netlify sites:delete", "firebase *:delete",
              "s3cmd del", "s3cmd rb", "s3cmd rm", "rclone delete", "rclone purge",
              "rclone deletefile", "rclone rmdirs", "rclone sync", "mc rm", "mc rb",
              "vault delete", "vault kv delete", "vault kv destroy", "vault secrets disable",
              "consul kv delete", "gh repo delete", "gh release delete", "glab repo delete",
              "dropuser"),
)
"""Commands that destroy data or infrastructure, by the rule that judges them."""

_BY_NAME: dict[str, tuple[Effect, ...]] = {}
for _effect in EFFECTS:
    if "*" not in _effect.program:
        _BY_NAME[_effect.program] = (*_BY_NAME.get(_effect.program, ()), _effect)
_PATTERNED = tuple(e for e in EFFECTS if "*" in e.program)


_INNER_COMMAND = {"docker": ("exec", "run"), "podman": ("exec", "run"),
                  "docker-compose": ("exec", "run"), "nerdctl": ("exec", "run"),
                  "kubectl": ("exec", "--")}
"""Words after which a program's arguments are a command it runs in a container (judged
as that command): they are not the program's own."""


def effect_of(program: str, args: list[str]) -> Effect | None:
    """The table's row for a program run with `args`, if one matches."""
    name = program.lower()
    for index, arg in enumerate(args):
        if arg in _INNER_COMMAND.get(name, ()):
            args = args[: index + 1]
            break
    for effect in _BY_NAME.get(name, ()) + _PATTERNED:
        if fnmatch.fnmatchcase(name, effect.program) and _given(effect.words, args):
            return effect
    return None


def names(program: str) -> bool:
    """Whether the table has a row for `program` (a word that may start such a command)."""
    name = program.lower()
    return name in _BY_NAME or any(fnmatch.fnmatchcase(name, e.program) for e in _PATTERNED)


def _given(wanted: tuple[str, ...], args: list[str]) -> bool:
    flags = [a.lower() for a in args if a.startswith("-")]
    words = [a.lower() for a in args if not a.startswith("-")]
    return all(any(f == word or f.startswith(word + "=") for f in flags)
               if word.startswith("-") else
               any(fnmatch.fnmatchcase(w, word) for w in words) for word in wanted)
