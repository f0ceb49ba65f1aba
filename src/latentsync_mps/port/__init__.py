"""The engine, the path of one `apply`: detect, select, transform, plan, then commit or just report.

No CLI code here, and nothing from the upstream tree is imported or run: files are read as bytes,
parsed with libcst and written back atomically (see manifest.py). One module per step:

    tree         the tree as files: which are read, which may be written (check_tree, walk)
    detection    which upstream and release a tree is (detect, detect_release)
    transform    each file's single pass, in worker processes for a large tree (transform_file, find)
    planning     what an apply would do, and the no-op digest (make_plan, Plan)
    noop         a re-apply on an untouched tree, answered before any rule is loaded (stored_plan)
    transaction  the tree lock, commit, revert, status
    scanning     the finders alone over a tree (scan)
    errors       what can go wrong, one type per cause (the CLI alone turns them into exit codes)
    outcome      what an apply or scan reports: Finding, Drift (no libcst: the no-op answer rebuilds them)
    rulepack     the rule packs, every rule built by its kind (pack/ reads the files)
    rules/       the rule kinds; manifest, finders, rewrite, positions, cuda_mentions, rulecheck

Import each name from the module that defines it. Only planning, transform, scanning and rules/
import libcst (most of a second): a no-op re-apply, the lock or an error message needs none of it.

May import: latentsync_mps.pack and itself.
"""
