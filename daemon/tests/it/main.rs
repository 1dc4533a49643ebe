//! Integration tests: the real `switchyard` binary and real plugin libraries,
//! talking HTTP on 127.0.0.1. Signed requests come from PyJWT, Python's
//! `cryptography` and `standardwebhooks` (`pip install -r
//! requirements-dev.txt`), not from the code under test.

mod common;

mod actions;
mod admin;
mod browser;
mod catalog;
mod check;
mod cli_output;
mod contract;
pub mod dashboard;
mod dashboard_browser;
mod durability;
mod embed;
mod flow;
mod handover;
mod handshakes;
mod hostile;
mod instances;
mod journal;
mod layers;
mod listen;
mod notices;
mod pg;
mod pg_groups;
mod pg_order;
mod pg_store;
mod pg_tls;
mod plans;
mod plugins;
mod providers;
mod queues;
mod reload;
mod reload_config;
mod rules_test;
mod service;
mod store_upgrade;
mod subscriptions;
mod tight;
mod traces;
