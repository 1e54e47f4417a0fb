-- Jira project keys are upper case (issue APP-1 is in project APP), and an operator typing
-- `--jira-project app` means that project: mappings are stored upper case, compared so. A
-- lower-case mapping that never matched gives way to an upper-case one for the same project.
DELETE FROM status_mapping m
WHERE m.jira_project <> upper(m.jira_project)
  AND EXISTS (
      SELECT 1 FROM status_mapping x
      WHERE x.organization_id = m.organization_id AND x.integration_id = m.integration_id
        AND x.jira_project = upper(m.jira_project)
  );
UPDATE status_mapping SET jira_project = upper(jira_project)
WHERE jira_project <> upper(jira_project);
ALTER TABLE status_mapping
    ADD CONSTRAINT status_mapping_project_upper CHECK (jira_project = upper(jira_project));
