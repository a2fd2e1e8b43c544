package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Steps a run reports when one fails.
const (
	stepPlan    = "plan"
	stepBackup  = "backup"
	stepRestart = "restart containerd"
	stepReload  = "reload dockerd"
	stepVerify  = "verify"
	stepWrite   = "write " // + the file's path
)

// applyNode plans the node's change and, unless it is a dry run, carries it out all or
// nothing: backup first, then every file, then the runtime restart or reload, then --verify.
// When a step after the first write fails, the node is put back as it was before the run
// (files restored, created files and directories removed, the runtime restarted on the old
// files if it was restarted on the new) and the error names the step and the rollback.
func applyNode(ctx context.Context, o MirrorOptions, n Node, r *NodeReport, access NodeAccess) error {
	docker := isDocker(r.Runtime)
	plan := planContainerd
	if docker {
		plan = planDocker
	}
	view := newFileSet(ctx, n)
	changes, err := plan(ctx, o, n, r, view)
	if err != nil {
		r.FailedStep = stepPlan
		return err
	}
	for _, c := range changes {
		r.Files = append(r.Files, describe(c))
	}
	switch {
	case len(changes) == 0:
		r.Status = StateUnchanged
	case o.DryRun:
		r.Status = StatePlanned
	}
	if o.DryRun {
		return nil
	}
	t := &txn{n: n, o: o, r: r, docker: docker, view: view}
	if len(changes) > 0 {
		wrote, step, err := t.backup(ctx, changes)
		if err != nil {
			return t.fail(ctx, step, err)
		}
		if !wrote {
			if step, err := t.write(ctx, changes, false); err != nil {
				return t.fail(ctx, step, err)
			}
		}
		r.Status = StateChanged
		if step, err := t.activate(ctx, changes); err != nil {
			return t.fail(ctx, step, err)
		}
	}
	if o.Verify != "" {
		if err := verifyNode(ctx, o, r, access); err != nil {
			return t.fail(ctx, stepVerify, err)
		}
	}
	return nil
}

// txn is one run's changes on one node, undoable until the run ends.
type txn struct {
	n      Node
	o      MirrorOptions
	r      *NodeReport
	docker bool
	view   *fileSet // the plan's view of the node: which directories are missing (nil: unknown)

	dir         string   // the run's backup directory ("" when the run keeps none, as --revert)
	manifest    backup   // what dir/manifest.json says
	backupFiles []string // files written into dir
	createdDirs []string // directories the run created, in creation order (dir's too)
	// firstInNewDir is the first file whose directory the run created (the step a failure
	// to record that directory in the manifest is reported as).
	firstInNewDir string
	written       []change // node files written so far, in order
	config        *change  // the runtime's config file when written (config.toml or daemon.json)
	activated     bool     // a restart or reload command ran (or may have) on the new files
}

// backup saves the old bytes of every file the run will change, and a manifest.json that
// --revert reads, in a new directory: nothing on the node changes before this is done. The
// directories the files go into are made in the same round trip, after the backup. When the
// plan saw which directories are missing, the manifest lists the ones the run will create
// from the start, and the files are written in that round trip too (wrote); the directories
// are then made strictly as seen, else the run fails and rolls back. Otherwise write records
// them in the manifest before it writes any file.
func (t *txn) backup(ctx context.Context, changes []change) (bool, string, error) {
	t.dir = path.Join(t.o.BackupDir, t.o.Access.RunID)
	b := backup{RunID: t.o.Access.RunID, Node: t.n.Name(), Created: time.Now().UTC().Format(time.RFC3339), ConfigFile: t.r.ConfigFile, CertsRoot: t.r.CertsRoot}
	if t.docker {
		b.Runtime = dockerRuntime
	}
	expect, known := t.expectDirs(changes) // the backup dir, then each file's dir
	want := func(i int) []string {
		if known {
			return expect[i]
		}
		return nil
	}
	ops := []txnOp{t.mkdir(t.dir, stepBackup, false, known, want(0))}
	for i, c := range changes {
		e := backupEntry{Path: c.path, Existed: c.old != nil, New: sum(c.new)}
		if c.old != nil {
			e.Old, e.Copy = sum(c.old), fmt.Sprintf("%03d-%s", i, path.Base(c.path))
			ops = append(ops, t.writeBackup(path.Join(t.dir, e.Copy), c.old))
		}
		b.Entries = append(b.Entries, e)
	}
	if known {
		for _, e := range expect[1:] {
			b.CreatedDirs = append(b.CreatedDirs, e...)
		}
	}
	t.manifest = b
	m, err := t.manifestOp(stepBackup)
	if err != nil {
		return false, stepBackup, err
	}
	m.ok = func() { t.r.Backup = t.dir }
	ops = append(ops, m)
	for i, c := range changes {
		ops = append(ops, t.mkdir(path.Dir(c.path), stepWrite+c.path, !known, known, want(i+1)))
	}
	if known {
		ops = append(ops, t.fileOps(changes)...)
	}
	step, err := t.run(ctx, ops)
	return known, step, err
}

// expectDirs is, for the backup directory and then each file's directory, the directories its
// mkdir will create (the ones missing, less those an earlier mkdir creates), when the plan saw
// them all.
func (t *txn) expectDirs(changes []change) ([][]string, bool) {
	dirs := []string{t.dir}
	for _, c := range changes {
		dirs = append(dirs, path.Dir(c.path))
	}
	var expect [][]string
	var creates []string
	for _, dir := range dirs {
		missing, ok := t.view.missingDirs(dir)
		if !ok {
			return nil, false
		}
		var mine []string
		for _, d := range missing {
			if !slices.Contains(creates, d) {
				mine, creates = append(mine, d), append(creates, d)
			}
		}
		expect = append(expect, mine)
	}
	return expect, true
}

// write puts the files in place in one round trip: their directories first unless backup made
// them (mkdirs), the manifest again when it now lists directories the run created (--revert
// removes them too), then every file in order.
func (t *txn) write(ctx context.Context, changes []change, mkdirs bool) (string, error) {
	ops, err := t.writeOps(changes, mkdirs)
	if err != nil {
		return stepWrite + t.firstInNewDir, err
	}
	return t.run(ctx, ops)
}

// writeOps are what write runs.
func (t *txn) writeOps(changes []change, mkdirs bool) ([]txnOp, error) {
	var ops []txnOp
	for _, c := range changes {
		if mkdirs {
			ops = append(ops, t.mkdir(path.Dir(c.path), stepWrite+c.path, true, false, nil))
		}
	}
	if len(t.manifest.CreatedDirs) > 0 && t.dir != "" {
		m, err := t.manifestOp(stepWrite + t.firstInNewDir)
		if err != nil {
			return nil, err
		}
		ops = append(ops, m)
	}
	return append(ops, t.fileOps(changes)...), nil
}

// fileOps write (or remove) each file, recorded for the rollback before each one runs.
func (t *txn) fileOps(changes []change) []txnOp {
	var ops []txnOp
	for _, c := range changes {
		op := Op{Kind: OpWrite, Path: c.path, Data: c.new}
		if c.new == nil {
			op = Op{Kind: OpRemove, Path: c.path}
		}
		ops = append(ops, txnOp{op: op, step: stepWrite + c.path, attempt: func() {
			// Recorded before the write: a write that fails half-way is restored too.
			t.written = append(t.written, c)
			if c.path == t.r.ConfigFile && t.r.ConfigChanged {
				t.config = &c
			}
		}})
	}
	return ops
}

// txnOp is one file operation of a txn and what the txn keeps of it for the rollback.
type txnOp struct {
	op      Op
	step    string         // the step its failure is reported as
	attempt func()         // runs when the operation ran, failed, or may have run
	done    func(OpResult) // runs with what it did (a failed one: what it did before failing)
	ok      func()         // runs when it worked
	// failed, when set, makes the operation optional: its failure is handed to failed and the
	// operations after it (optional too) still run.
	failed func(error)
}

// run carries out ops in one round trip (as far as their size allows) and records each one
// that ran, or may have; a failure returns the failed operation's step, unless the operation
// is optional.
func (t *txn) run(ctx context.Context, tops []txnOp) (string, error) {
	ops := make([]Op, len(tops))
	for i := range tops {
		ops[i] = tops[i].op
	}
	res, err := runOps(ctx, t.n, ops)
	ran, worked := len(tops), len(tops)
	var be *BatchError
	if errors.As(err, &be) {
		worked = be.Index
		if !be.InDoubt {
			ran = be.Index + 1
		}
	}
	for i := range ran {
		if tops[i].attempt != nil {
			tops[i].attempt()
		}
		if i < len(res) && tops[i].done != nil {
			tops[i].done(res[i])
		}
		if i < worked && tops[i].ok != nil {
			tops[i].ok()
		}
	}
	switch {
	case err == nil:
		return "", nil
	case be != nil && tops[be.Index].failed != nil:
		tops[be.Index].failed(be.Err)
		if rest := tops[be.Index+1:]; len(rest) > 0 {
			return t.run(ctx, rest)
		}
		return "", nil
	case be != nil:
		return tops[be.Index].step, be.Err
	}
	return tops[0].step, err
}

// mkdir makes dir and its parents, recorded for the rollback and, with manifest, for --revert.
// With strict, it must create exactly expect (expectDirs).
func (t *txn) mkdir(dir, step string, manifest, strict bool, expect []string) txnOp {
	op := Op{Kind: OpMkdir, Path: dir, Expect: expect, Strict: strict}
	return txnOp{op: op, step: step, done: func(r OpResult) {
		t.createdDirs = append(t.createdDirs, r.Created...)
		if manifest && t.dir != "" && len(r.Created) > 0 {
			t.manifest.CreatedDirs = append(t.manifest.CreatedDirs, r.Created...)
			if t.firstInNewDir == "" {
				t.firstInNewDir = strings.TrimPrefix(step, stepWrite)
			}
		}
	}}
}

// writeBackup writes a file into the backup directory, which the rollback removes.
func (t *txn) writeBackup(p string, data []byte) txnOp {
	return txnOp{op: Op{Kind: OpWrite, Path: p, Data: data}, step: stepBackup, attempt: func() {
		if !slices.Contains(t.backupFiles, p) {
			t.backupFiles = append(t.backupFiles, p)
		}
	}}
}

// manifestOp writes the manifest as it stands now.
func (t *txn) manifestOp(step string) (txnOp, error) {
	j, err := json.MarshalIndent(t.manifest, "", "  ")
	if err != nil {
		return txnOp{step: step}, err
	}
	op := t.writeBackup(path.Join(t.dir, manifestName), j)
	op.step = step
	return op, nil
}

// activate makes the runtime take the written config file up (unless --restart never).
func (t *txn) activate(ctx context.Context, changes []change) (string, error) {
	if t.config == nil {
		return "", nil
	}
	if t.o.Restart == RestartNever {
		if t.docker {
			t.r.Warnings = append(t.r.Warnings, fmt.Sprintf("%s changed but --restart never: run %q on this node for it to take effect", t.config.path, t.o.DockerReloadCmd))
		} else {
			t.r.Warnings = append(t.r.Warnings, fmt.Sprintf("%s changed but --restart never: restart containerd on this node for it to take effect", t.config.path))
		}
		return "", nil
	}
	if t.docker {
		t.activated = true
		err := reloadDocker(ctx, t.o, t.n, t.r, t.config.old, t.config.new)
		if commandNotRun(err) {
			t.activated = false
		}
		return stepReload, err
	}
	t.activated = true
	err := restartContainerd(ctx, t.o, t.n, t.r)
	if commandNotRun(err) {
		t.activated = false
	}
	return stepRestart, err
}

// fail rolls the node back and returns the error the report shows: the failed step, what
// the rollback did, and what to do when the rollback itself failed.
func (t *txn) fail(ctx context.Context, step string, cause error) error {
	t.r.Status, t.r.FailedStep = StateFailed, step
	msg := fmt.Sprintf("%s failed: %v", step, cause)
	ok, did := t.rollback(ctx)
	t.r.RolledBack = did
	if len(did) > 0 {
		msg += "; rolled back: " + strings.Join(did, ", ")
	}
	if ok {
		if len(t.written) > 0 || t.dir != "" {
			msg += "; the node is as it was before the run"
		}
		t.r.Backup = ""
	} else if t.dir != "" {
		msg += fmt.Sprintf("; the backup %s is kept: run kubectl bkcache mirror --revert on this node, or restore from it by hand", t.dir)
	} else {
		msg += "; check the files listed above on the node by hand"
	}
	return &stepError{msg: msg, cause: cause}
}

// stepError is a failed step with its rollback; errors.Is/As see the step's own error.
type stepError struct {
	msg   string
	cause error
}

func (e *stepError) Error() string { return e.msg }
func (e *stepError) Unwrap() error { return e.cause }

// rollback undoes the run on the node: written files get their old bytes back (or are
// removed when they did not exist), the runtime is restarted or reloaded on them if it was on
// the new ones, and the backup and every directory the run created are removed. It reports
// whether the node is back as it was, and each thing it did or failed to do.
func (t *txn) rollback(ctx context.Context) (bool, []string) {
	// Also after a cancel or --node-timeout: the node must not be left half-changed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	ok := true
	var did []string
	for i := len(t.written) - 1; i >= 0; i-- {
		c := t.written[i]
		var err error
		if c.old == nil {
			err = t.n.Remove(ctx, c.path)
			did = append(did, "removed "+c.path)
		} else {
			err = t.n.WriteFile(ctx, c.path, c.old)
			did = append(did, "restored "+c.path)
		}
		if err != nil {
			ok = false
			did[len(did)-1] = fmt.Sprintf("FAILED to put back %s (%v)", c.path, err)
		}
	}
	switch {
	case t.config == nil || !t.activated:
	case !ok:
		did = append(did, "runtime not restarted on a half-restored node")
	case t.docker:
		if err := reloadDocker(ctx, t.o, t.n, t.r, t.config.new, t.config.old); err != nil {
			ok = false
			did = append(did, fmt.Sprintf("FAILED to reload dockerd on the restored %s (%v)", t.config.path, err))
		} else {
			t.r.Reloaded = false
			did = append(did, "reloaded dockerd on the restored "+t.config.path)
		}
	default:
		if err := restartContainerd(ctx, t.o, t.n, t.r); err != nil {
			ok = false
			did = append(did, fmt.Sprintf("FAILED to restart containerd on the restored %s (%v): check containerd on the node (journalctl -u containerd)", t.config.path, err))
		} else {
			did = append(did, "restarted containerd on the restored "+t.config.path)
		}
	}
	if !ok {
		return false, did // keep the backup: it is what --revert and a person need now
	}
	for _, p := range t.backupFiles {
		if err := t.n.Remove(ctx, p); err != nil {
			return false, append(did, fmt.Sprintf("FAILED to remove %s (%v)", p, err))
		}
	}
	var dirs []string
	for i := len(t.createdDirs) - 1; i >= 0; i-- {
		removed, err := t.n.RemoveDirIfEmpty(ctx, t.createdDirs[i])
		if err != nil {
			return false, append(did, fmt.Sprintf("FAILED to remove directory %s (%v)", t.createdDirs[i], err))
		}
		if removed {
			dirs = append(dirs, t.createdDirs[i]+"/")
		}
	}
	if len(dirs) > 0 {
		did = append(did, "removed "+strings.Join(dirs, ", "))
	}
	return true, did
}

// restartContainerd runs the restart command and waits until the CRI answers again.
func restartContainerd(ctx context.Context, o MirrorOptions, n Node, r *NodeReport) error {
	o.progress(n.Name(), "restarting containerd (%s)", o.RestartCmd)
	d, err := n.RestartContainerd(ctx, o.RestartCmd)
	if err != nil {
		return err
	}
	r.Restarted, r.RestartSeconds = true, d.Seconds()
	return nil
}
