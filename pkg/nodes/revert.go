package nodes

import (
	"context"
	"fmt"
	"path"
)

// revertNode puts back what the newest backup on the node recorded, all or nothing like an
// apply: files whose content is still what that run wrote get their old bytes back (files it
// created are removed), later edits are left alone and reported, the runtime restarts or
// reloads on the restored file, and the backup is marked reverted.
func revertNode(ctx context.Context, o MirrorOptions, n Node, r *NodeReport) error {
	dir, b, err := newestBackup(ctx, o, n)
	if err != nil {
		r.FailedStep = stepPlan
		return err
	}
	if b == nil {
		r.Status = StateUnchanged
		r.Warnings = append(r.Warnings, fmt.Sprintf("no backup to revert in %s", o.BackupDir))
		return nil
	}
	r.Backup, r.ConfigFile, r.CertsRoot = dir, b.ConfigFile, b.CertsRoot
	changes, err := revertChanges(ctx, n, dir, b, r)
	if err != nil {
		r.FailedStep = stepPlan
		return err
	}
	docker := b.Runtime == dockerRuntime
	for _, c := range changes {
		fc := describe(c)
		if c.new != nil {
			fc.Action = ActionRestore
		}
		r.Files = append(r.Files, fc)
		if c.path == b.ConfigFile {
			r.ConfigChanged = true
			r.RestartNeeded, r.ReloadNeeded = !docker, docker
		}
	}
	if o.DryRun {
		r.Status = StatePlanned
		return nil
	}
	t := &txn{n: n, o: o, r: r, docker: docker}
	ops, err := t.writeOps(changes, true)
	if err != nil {
		return t.fail(ctx, stepWrite, err)
	}
	// The tidying up goes in the same round trip when no restart or reload comes between.
	tidy := revertTidy(dir, b, r)
	quiet := !r.ConfigChanged || o.Restart == RestartNever
	if quiet {
		ops, tidy = append(ops, tidy...), nil
	}
	if len(ops) > 0 {
		if step, err := t.run(ctx, ops); err != nil {
			return t.fail(ctx, step, err)
		}
	}
	r.Status = StateReverted
	if step, err := t.activate(ctx, changes); err != nil {
		return t.fail(ctx, step, err)
	}
	if len(tidy) > 0 {
		_, _ = t.run(ctx, tidy) // optional operations: it does not fail
	}
	return nil
}

// revertTidy removes the directories the reverted run created and marks its backup reverted:
// the run is undone by then, so a failure is a warning.
func revertTidy(dir string, b *backup, r *NodeReport) []txnOp {
	var ops []txnOp
	for i := len(b.CreatedDirs) - 1; i >= 0; i-- {
		d := b.CreatedDirs[i]
		ops = append(ops, txnOp{op: Op{Kind: OpRmdir, Path: d}, failed: func(err error) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("could not remove the directory %s the run created: %v", d, err))
		}})
	}
	return append(ops, txnOp{op: Op{Kind: OpRename, Path: dir, To: dir + revertedSuffix}, failed: func(err error) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("could not mark backup %s reverted (%v): a later --revert finds it again and changes nothing", dir, err))
	}})
}

// revertChanges works out, newest entry first, which files still hold what the backup's run
// wrote and what they go back to.
func revertChanges(ctx context.Context, n Node, dir string, b *backup, r *NodeReport) ([]change, error) {
	// Every file and backup copy in one round trip, in the order the loop below takes them.
	var reads []Op
	for i := len(b.Entries) - 1; i >= 0; i-- {
		reads = append(reads, Op{Kind: OpRead, Path: b.Entries[i].Path})
		if b.Entries[i].Existed {
			reads = append(reads, Op{Kind: OpRead, Path: path.Join(dir, b.Entries[i].Copy)})
		}
	}
	res, err := runOps(ctx, n, reads)
	read := func() ([]byte, error) {
		if len(res) == 1 && err != nil {
			return nil, batchCause(err) // the read that failed
		}
		data := res[0].Data
		res = res[1:]
		return data, nil
	}
	var changes []change
	for i := len(b.Entries) - 1; i >= 0; i-- {
		e := b.Entries[i]
		cur, err := read()
		if err != nil {
			return nil, err
		}
		var old []byte
		if e.Existed {
			if old, err = read(); err != nil {
				return nil, err
			}
			if sum(old) != e.Old {
				return nil, fmt.Errorf("backup %s: copy of %s does not match its recorded sha256; restore by hand", dir, e.Path)
			}
		}
		if sum(cur) == sum(old) && (cur == nil) == !e.Existed {
			continue // already as it was
		}
		if sum(cur) != e.New {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s changed since run %s: left as it is (its old content is in %s)", e.Path, b.RunID, dir))
			continue
		}
		changes = append(changes, change{path: e.Path, old: cur, new: old})
	}
	return changes, nil
}
