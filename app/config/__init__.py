"""The app's settings (app.config.settings: the fields, their bounds, the paths), how their values
are checked (app.config.check), the settings file (app.config.file), and who may reach this run
(app.config.access: flags, never saved)."""
