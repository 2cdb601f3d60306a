//! Tests of the watcher with a fake backend.
