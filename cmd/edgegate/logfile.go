package main

import (
	"io"
	"os"
	"sync"
)

// logOutput is where `edgegate run` writes its log: stderr always, and the
// configuration's log.file besides. The file is opened by path again on
// SIGUSR1 (reopen), logrotate's convention: it renames the file, signals,
// and the log goes on in a new file under the old name.
type logOutput struct {
	stderr io.Writer

	mu   sync.Mutex // held while writing, so a reopen never closes a file mid-record
	path string     // "" for none
	file *os.File
}

// openLogFile opens path for appending, creating it 0640 (group-readable
// for log shippers in edgegate's group; the unit's UMask narrows nothing
// further).
func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// Write writes one log record to stderr and to the file. A file that fails
// (a full disk) does not keep the record from stderr.
func (o *logOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	if o.file != nil {
		o.file.Write(b)
	}
	o.mu.Unlock()
	return o.stderr.Write(b)
}

// setPath makes path the log file from now on ("" for none); the file in
// use stays if path cannot be opened. An unchanged path is left alone.
func (o *logOutput) setPath(path string) error {
	o.mu.Lock()
	same := path == o.path
	o.mu.Unlock()
	if same {
		return nil
	}
	return o.open(path)
}

// reopen opens the log file's path again, for a file that was renamed.
func (o *logOutput) reopen() error {
	o.mu.Lock()
	path := o.path
	o.mu.Unlock()
	if path == "" {
		return nil
	}
	return o.open(path)
}

func (o *logOutput) open(path string) error {
	var f *os.File
	if path != "" {
		var err error
		if f, err = openLogFile(path); err != nil {
			return err
		}
	}
	o.mu.Lock()
	old := o.file
	o.path, o.file = path, f
	o.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}
