"""The doctor: facts about this computer (app.doctor.facts) and the checks that turn them into
findings with their fixes (app.doctor.checks), for `python -m app doctor` and the System tab."""
