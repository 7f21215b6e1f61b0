"""The long-running controller: scheduler, work queue, webhooks, leader lock, health, metrics."""
