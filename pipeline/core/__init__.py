"""The shared kernel: settings, errors, the store and its layout, keys, the retention policy and dates, the run's resources, alerts."""
