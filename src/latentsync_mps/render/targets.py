"""`targets` as tables a person reads."""

from __future__ import annotations

from latentsync_mps.features.targets import REFRESH, UPSTREAMS


def render(console, data: dict) -> None:
    """The targets as tables a person reads: what, which version, needs what, from where, when."""
    from rich.table import Table

    torch = data["torch"]
    table = Table(title=f"torch releases with an MPS table ({torch['source']})", title_justify="left")
    sources = [release["wheel"] or release["source"] for release in torch["releases"]]
    for column in ("torch", "min macOS", "built"):
        table.add_column(column, overflow="fold")
    # A wheel's name is what a person pastes into pip: never folded, the other columns give way.
    table.add_column("derived from (macOS arm64 wheel)", min_width=max(map(len, sources), default=0), no_wrap=True)
    for release, source in zip(torch["releases"], sources, strict=True):
        table.add_row(release["torch"], release["min_macos"] or "?", release["built"] or "?", source)
    console.print(table)
    if torch["checked"]:
        skipped = ", ".join(torch["skipped"]) or "none"
        console.print(
            f"Skipped (on the registry with no macOS arm64 wheel, {torch['checked']}): {skipped}", highlight=False
        )

    stacks = data["host_stacks"]
    if stacks["note"]:
        console.print(f"\nHost stacks: {stacks['note']}.", highlight=False)
    else:
        table = Table(title=f"\nhost stacks ({stacks['source']})", title_justify="left")
        for column in ("stack", "python", "macOS", "torch", "source", "checked"):
            table.add_column(column)
        for stack in stacks["stacks"]:
            table.add_row(
                f"{stack['name']}: {stack['summary']}" if stack["summary"] else stack["name"],
                stack["python"] or "?",
                stack["macos"] or "?",
                stack["packages"].get("torch", "-"),
                stack["source"] or "?",
                stack["checked"] or "?",
            )
        console.print(table)

    table = Table(title=f"\nupstream releases and wrapper commits (patches/{UPSTREAMS})", title_justify="left")
    for column in ("release", "profile", "commit", "date", "repository (GitHub)"):
        table.add_column(column, overflow="fold")
    for release in data["upstreams"]:
        where = release["repository"].removeprefix("https://github.com/")
        table.add_row(release["name"], release["profile"], release["commit"], release["date"] or "?", where)
    console.print(table)

    watched = data["watched"]
    if watched["checked"] is None:
        console.print(f"\nNot checked against the registry yet ({watched['source']} is missing): run `{REFRESH}`.")
        return
    newest = ", ".join(
        f"{name} {entry['newest']}" for name, entry in watched["packages"].items() if entry["newest"] is not None
    )
    console.print(
        f"\nLast checked {watched['checked']} ({watched['source']}): newest with a macOS arm64 wheel on "
        f"{watched['index']}: {newest}.",
        highlight=False,
    )
    desktop = watched["desktop"]
    if desktop:
        console.print(
            f"ComfyUI Desktop's {desktop['path']}: sha256 {desktop['sha256'][:12]}, as of commit "
            f"{desktop['commit'][:8]} of {desktop['repository']}.",
            highlight=False,
        )
    for head in watched["heads"]:
        console.print(f"{head['repository']}: HEAD {head['head'][:7]} ({head['date']}).", highlight=False)
    console.print(f"Refresh all of it: `{REFRESH}` (from a checkout).", highlight=False)
