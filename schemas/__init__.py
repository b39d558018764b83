"""The data of impactbus: events, targets, deliveries, subjects and the error hierarchy."""
