package nodes

import (
	"encoding/json"
	"slices"
)

// State is the outcome on one node.
type State string

const (
	StatePlanned     State = "planned"     // --dry-run: the files were read and the change worked out
	StateChanged     State = "changed"     // files written (and the runtime restarted or reloaded)
	StateUnchanged   State = "unchanged"   // nothing to do
	StateReverted    State = "reverted"    // --revert put the newest backup back
	StateOK          State = "ok"          // status: the files were read
	StateSkipped     State = "skipped"     // a runtime bkcache does not configure
	StateFailed      State = "failed"      // a step failed; the run on this node was rolled back
	StateUnreachable State = "unreachable" // the node's files could not be read: nothing was planned or touched
)

// Failure reports whether a state makes the command exit non-zero.
func (s State) Failure() bool { return s == StateFailed || s == StateUnreachable }

// FileAction is what a run does to one file.
type FileAction string

const (
	ActionCreate  FileAction = "create"
	ActionUpdate  FileAction = "update"
	ActionRemove  FileAction = "remove"
	ActionRestore FileAction = "restore"
)

// FileChange is one file a run writes or would write.
type FileChange struct {
	Path   string     `json:"path"`
	Action FileAction `json:"action"`
	Diff   string     `json:"diff,omitempty"`
}

// ImageSource says how the node-access image for a node was chosen.
type ImageSource string

const (
	ImageGiven      ImageSource = "given"      // --image, used as is
	ImageOnNode     ImageSource = "on-node"    // the default, already on the node
	ImageSubstitute ImageSource = "substitute" // the default is not on the node; a busybox/alpine it holds
	ImagePull       ImageSource = "pull"       // the default, for the node to pull
)

// AccessImage is the image of a node's node-access pod and how it was chosen.
type AccessImage struct {
	Image  string      `json:"image"`
	Source ImageSource `json:"source"`
}

// NodeReport is the outcome of apply or revert on one node.
type NodeReport struct {
	Node           string       `json:"node"`
	Runtime        string       `json:"runtime"`
	Status         State        `json:"status"`
	AccessImage    *AccessImage `json:"accessImage,omitempty"`
	ConfigFile     string       `json:"configFile,omitempty"`
	CertsRoot      string       `json:"certsRoot,omitempty"`
	Files          []FileChange `json:"files,omitempty"`
	ConfigChanged  bool         `json:"configChanged"`
	RestartNeeded  bool         `json:"restartNeeded"`
	Restarted      bool         `json:"restarted"`
	ReloadNeeded   bool         `json:"reloadNeeded,omitempty"` // Docker runtime: daemon.json changed
	Reloaded       bool         `json:"reloaded,omitempty"`     // dockerd reloaded and shows the new keys
	RestartSeconds float64      `json:"restartSeconds,omitempty"`
	Backup         string       `json:"backup,omitempty"`
	Verified       []PullResult `json:"verified,omitempty"`
	Warnings       []string     `json:"warnings,omitempty"`
	// FailedStep names the step that failed (plan, backup, write PATH, restart containerd,
	// reload dockerd, verify); RolledBack lists what the rollback did after it.
	FailedStep string   `json:"failedStep,omitempty"`
	RolledBack []string `json:"rolledBack,omitempty"`
	Error      string   `json:"error,omitempty"`
	Seconds    float64  `json:"seconds"`
}

// Read reports whether the node's files were read, i.e. whether a plan, diff or file list
// in the report means anything.
func (r NodeReport) Read() bool {
	return r.Status != StateUnreachable && r.Status != StateSkipped && r.FailedStep != stepPlan
}

// MarshalJSON leaves out every field about the node's files (plan, restart, backup) when they
// were not read: -o json|yaml makes no claim a table would not make.
func (r NodeReport) MarshalJSON() ([]byte, error) {
	type plain NodeReport
	if r.Read() {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		Node        string       `json:"node"`
		Runtime     string       `json:"runtime"`
		Status      State        `json:"status"`
		AccessImage *AccessImage `json:"accessImage,omitempty"`
		Warnings    []string     `json:"warnings,omitempty"`
		FailedStep  string       `json:"failedStep,omitempty"`
		Error       string       `json:"error,omitempty"`
		Seconds     float64      `json:"seconds"`
	}{r.Node, r.Runtime, r.Status, r.AccessImage, r.Warnings, r.FailedStep, r.Error, r.Seconds})
}

// Failed reports whether any node failed or could not be reached.
func Failed(reports []NodeReport) bool {
	return slices.ContainsFunc(reports, func(r NodeReport) bool { return r.Status.Failure() })
}
