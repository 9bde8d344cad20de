"""Static checks of infra/ (Terraform), firestore.rules wiring and checkov findings."""
