// Lists, creates, reads, updates and deletes Depot projects.
//   node examples/depot/projects.mjs
import { openDepot } from "./env.mjs";

const { depot, where, close } = await openDepot();
try {
  console.log(`Depot: ${where}`);
  const created = await depot.projects.create({
    name: `example-${Date.now()}`,
    regionId: "us-east-1",
    cachePolicy: { keepGb: 50, keepDays: 14 },
  });
  console.log(`created ${created.projectId} (${created.name}, ${created.regionId}, keep ${created.cachePolicy.keepGb} GB / ${created.cachePolicy.keepDays} days)`);
  const updated = await depot.projects.update(created.projectId, { cachePolicy: { keepGb: 20, keepDays: 7 } });
  console.log(`updated: keep ${updated.cachePolicy.keepGb} GB / ${updated.cachePolicy.keepDays} days`);
  for (const project of await depot.projects.list()) {
    console.log(`- ${project.projectId}  ${project.name}  ${project.regionId}  created ${project.createdAt.toISOString()}`);
  }
  await depot.projects.delete(created.projectId);
  console.log(`deleted ${created.projectId}`);
} finally {
  await close();
}
